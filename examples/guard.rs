//! A lock guard (the blocking client) protecting writes to a storage that checks fencing
//! tokens: the guard renews a short lease in the background while the work runs far longer
//! than the lease, every write names the guard's token, and the work stops at once if the
//! guard reports the lock lost.
//!
//! Runs against a single node started in this process: `cargo run --example guard`.

use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use udplock::client::{LockOptions, LossReason};
use udplock::single::{SingleConfig, SingleNode};
use udplock::Client;

/// A storage that refuses a write under an older fencing token than one it has seen (see
/// the `fencing` example for why).
#[derive(Default)]
struct FencedStore {
    /// (highest token seen, the rows written).
    state: Mutex<(u64, Vec<String>)>,
}

impl FencedStore {
    fn write(&self, token: u64, row: String) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        if token < state.0 {
            return Err(format!("refused {row:?}: token {token} < {}", state.0));
        }
        state.0 = token;
        state.1.push(row);
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = SingleNode::start(SingleConfig::new("127.0.0.1:0".parse()?))?;
    let client = Client::connect(&[node.local_addr()])?;
    let store = FencedStore::default();

    // A 300 ms lease, renewed about every 100 ms by the client's renewer thread.
    let options = LockOptions::new()
        .ttl(Duration::from_millis(300))
        .wait(Duration::from_secs(5));
    let guard = client.lock("reports/nightly", &options)?;
    let token = guard.fencing_token();
    println!(
        "holding {:?} as {:?}, token {token}",
        guard.resource(),
        guard.owner()
    );

    // Two seconds of work, far longer than the lease: each step checks the guard first.
    for batch in 0..20 {
        if let Some(reason) = guard.lost() {
            eprintln!("lock lost at batch {batch}, stopping: {reason}");
            return Ok(());
        }
        store.write(token, format!("batch {batch}"))?;
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(guard.fencing_token(), token, "renewals keep the token");
    println!(
        "20 batches written over 2 s under a 300 ms lease; {:?} of the lease left",
        guard.remaining()
    );

    // Another owner cannot take the lock while the guard holds it...
    let rival = client.try_lock("reports/nightly", &LockOptions::new());
    println!("a rival's try_lock: {:?}", rival.map(|g| g.fencing_token()));

    // ...and gets it, with a higher token, once the guard is released (or dropped).
    let signal = guard.lost_signal();
    guard.release()?;
    assert_eq!(signal.lost(), None::<LossReason>, "released, not lost");
    let next = client.try_lock("reports/nightly", &LockOptions::new())?;
    println!(
        "after the release a new guard holds it, token {}",
        next.fencing_token()
    );
    store.write(next.fencing_token(), "the next holder's row".into())?;
    // A write under the old token is now refused by the storage itself.
    if let Err(why) = store.write(token, "a stale row".into()) {
        println!("storage: {why}");
    }
    println!("rows: {}", store.state.lock().unwrap().1.len());
    Ok(())
}
