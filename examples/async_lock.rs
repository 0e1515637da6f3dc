//! The async client (feature `tokio`): a lock guard held by one task while another task
//! waits for the same lock and gives up with `tokio::time::timeout` (dropping its waiting
//! `lock()` future withdraws it from the server's queue, spec §4.12), then a guard handed
//! from task to task, and the loss signal `select!`ed against the work.
//!
//! Runs against a single node started in this process:
//! `cargo run --example async_lock --features tokio`.

use std::time::Duration;

use udplock::client::{AsyncClient, LockOptions};
use udplock::single::{SingleConfig, SingleNode};
use udplock::ClientConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = SingleNode::start(SingleConfig::new("127.0.0.1:0".parse()?))?;
    let client = AsyncClient::new(ClientConfig::new(vec![node.local_addr()])).await?;

    // A guard with a short lease, renewed by the client's one renewer task.
    let options = LockOptions::new().ttl(Duration::from_millis(500));
    let guard = client.lock("jobs/import", &options).await?;
    println!(
        "holding {:?}, token {}",
        guard.resource(),
        guard.fencing_token()
    );

    // Another task wants the lock, but only for 300 ms: the timeout drops its `lock()`
    // future, which withdraws its wait (CANCEL_WAIT) instead of leaving it queued.
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            let wait = LockOptions::new().wait(Duration::from_secs(30));
            tokio::time::timeout(
                Duration::from_millis(300),
                client.lock("jobs/import", &wait),
            )
            .await
        })
    };
    match waiter.await? {
        Err(_elapsed) => println!("the other task gave up after 300 ms"),
        Ok(result) => println!("the other task got {result:?}"),
    }
    let status = client.status("jobs/import").await?;
    // (The withdrawal goes out from a spawned task: it may still be on its way here.)
    println!("waiters left in the queue: {}", status.waiter_count);

    // The work, racing the loss signal: it stops at once if the lock is lost. It runs two
    // seconds, four times the lease.
    let work = async {
        for step in 0..10 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            println!("step {step} under token {}", guard.fencing_token());
        }
    };
    tokio::select! {
        () = work => println!("work done, {:?} of the lease left", guard.remaining()),
        lost = guard.lost_wait() => {
            eprintln!("lock lost, work abandoned: {lost:?}");
            return Ok(());
        }
    }

    // Guards are `Send + 'static`: hand one to another task and release it there (dropping it
    // releases it too, from a spawned task, without waiting for the answer).
    tokio::spawn(async move { guard.release().await }).await??;
    let next = client.try_lock("jobs/import", &LockOptions::new()).await?;
    println!("the next guard has token {}", next.fencing_token());
    next.release().await?;
    Ok(())
}
