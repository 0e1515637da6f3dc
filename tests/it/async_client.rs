//! The async client (feature `tokio`) against a real single node over loopback UDP: mutual
//! exclusion between tasks, a dropped waiting acquire withdrawn with CANCEL_WAIT (spec
//! §4.12), a timer task that keeps its schedule while another task waits for a lock, and
//! its acquire latency beside the blocking client's and the raw UDP round trip; async lock
//! guards (renewed, released on drop, a loss signalled before the validity ends).

use std::collections::HashSet;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use udplock::client::{AsyncClient, LockOptions, LossReason};
use udplock::{BootInstant, Client, ClientConfig, LockError};

use super::lossy::Relay;
use super::start_node;

async fn async_client(node: &udplock::single::SingleNode) -> AsyncClient {
    AsyncClient::new(ClientConfig::new(vec![node.local_addr()]))
        .await
        .expect("client")
}

/// Polls `status` until `done` holds (at most 5 s): waits for the server's state, not for
/// a guessed time.
async fn until_status(
    client: &AsyncClient,
    resource: &str,
    done: impl Fn(&udplock::LockStatus) -> bool,
) -> udplock::LockStatus {
    let start = Instant::now();
    loop {
        let status = client.status(resource).await.expect("status");
        if done(&status) {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "never reached: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_take_turns_and_never_hold_the_lock_together() {
    let node = start_node();
    let client = async_client(&node).await;
    let inside = Arc::new(AtomicBool::new(false));
    let turns = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (client, inside, turns) = (client.clone(), inside.clone(), turns.clone());
        tasks.push(tokio::spawn(async move {
            let me = format!("task-{t}");
            for _ in 0..25 {
                let lease = client
                    .acquire("shared", &me, 5_000, Some(10_000))
                    .await
                    .expect("acquired within the wait");
                assert!(lease.is_valid());
                assert!(
                    !inside.swap(true, Ordering::SeqCst),
                    "two tasks hold the lock at once"
                );
                turns.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                inside.store(false, Ordering::SeqCst);
                assert_eq!(client.release("shared", &me).await.unwrap(), 0);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(turns.load(Ordering::SeqCst), 100);
}

/// Spec §4.12: dropping a waiting acquire's future withdraws it. B waits behind A's hold,
/// C behind B. B's future is dropped: the server's waiter count drops to 1 (C), and when A
/// releases, C gets the lock at once. Without the withdrawal the lock would go to B, whom
/// nobody listens to, for its 30 s lease, and C's 5 s wait would run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_waiting_acquire_frees_its_place_in_the_queue() {
    let node = start_node();
    let client = async_client(&node).await;
    let a = client.acquire("q", "a", 0, Some(30_000)).await.unwrap();
    let b = {
        let client = client.clone();
        tokio::spawn(async move { client.acquire("q", "b", 10_000, Some(30_000)).await })
    };
    until_status(&client, "q", |s| s.waiter_count == 1).await;
    let c = {
        let client = client.clone();
        tokio::spawn(async move { client.acquire("q", "c", 5_000, Some(30_000)).await })
    };
    until_status(&client, "q", |s| s.waiter_count == 2).await;
    b.abort();
    assert!(b.await.unwrap_err().is_cancelled());
    until_status(&client, "q", |s| s.waiter_count == 1).await;
    assert_eq!(client.release("q", "a").await.unwrap(), 0);
    let c = c
        .await
        .unwrap()
        .expect("C gets the lock B's withdrawal left");
    assert!(c.fencing_token > a.fencing_token);
    let status = client.status("q").await.unwrap();
    assert_eq!(status.holder.as_deref(), Some("c"));
    let stats = client.stats();
    assert_eq!((stats.cancels, stats.cancels_removed), (1, 1), "{stats:?}");
}

/// Issue 11's target: a tokio program that waits for a lock in one task keeps a 10 ms
/// interval in another on schedule (the blocking client's acquire held a runtime thread: a
/// 10 ms timer came 516 ms late). One runtime thread, so a blocked thread would show.
#[tokio::test(flavor = "current_thread")]
async fn a_timer_keeps_its_schedule_while_another_task_waits_for_a_lock() {
    let node = start_node();
    let client = async_client(&node).await;
    // The same measurement with nothing waiting: what the machine alone does to a timer.
    let control = interval_lateness(30).await;
    client
        .acquire("t", "holder", 0, Some(30_000))
        .await
        .unwrap();
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.acquire("t", "waiter", 1_000, None).await })
    };
    let (late_max, late_p50) = interval_lateness(80).await;
    println!(
        "10 ms interval beside a waiting acquire: lateness max {late_max:?}, median \
         {late_p50:?} over 80 ticks (control, same runtime, nothing waiting: {control:?})"
    );
    assert!(late_max < Duration::from_millis(50), "{late_max:?}");
    assert!(matches!(
        waiter.await.unwrap(),
        Err(LockError::LockAcquisitionTimeout)
    ));
}

/// How late the ticks of a 10 ms interval come: (max, median) over `ticks` ticks.
async fn interval_lateness(ticks: u32) -> (Duration, Duration) {
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    interval.tick().await; // the first tick completes at once: the schedule starts here
    let start = tokio::time::Instant::now();
    let mut late = Vec::new();
    for tick in 1..=ticks {
        interval.tick().await;
        let due = start + Duration::from_millis(10) * tick;
        late.push(tokio::time::Instant::now().saturating_duration_since(due));
    }
    late.sort();
    (late[late.len() - 1], late[late.len() / 2])
}

fn percentile_us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1_000.0
}

/// Acquire latency, one node on loopback: the async client's p50 beside the blocking
/// client's and the raw UDP round trip (the floor), measured in the same run. Prints the
/// figures; asserts only that both clients completed every acquire.
#[test]
fn async_acquire_latency_beside_the_blocking_client() {
    const ROUNDS: usize = 2_000;
    const BATCH: usize = 100;
    let node = start_node();
    // The floor: a 76-byte datagram echoed by a thread, as a request and its reply.
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 128];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            if echo.send_to(&buf[..n], from).is_err() || n == 1 {
                return;
            }
        }
    });
    let ping = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rtt = Histogram::<u64>::new(3).unwrap();
    let mut buf = [0u8; 76];
    for _ in 0..ROUNDS {
        let t = Instant::now();
        ping.send_to(&buf, echo_addr).unwrap();
        ping.recv_from(&mut buf).unwrap();
        rtt.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    ping.send_to(&[0], echo_addr).unwrap();

    // Both clients in alternating batches, so the machine's noise (other processes on
    // shared CPUs) falls on both alike.
    let blocking = Client::new(ClientConfig::new(vec![node.local_addr()])).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime.block_on(async {
        AsyncClient::new(ClientConfig::new(vec![node.local_addr()]))
            .await
            .unwrap()
    });
    let mut sync_h = Histogram::<u64>::new(3).unwrap();
    let mut async_h = Histogram::<u64>::new(3).unwrap();
    for _ in 0..ROUNDS / BATCH {
        for _ in 0..BATCH {
            let t = Instant::now();
            blocking
                .acquire("bench-sync", "me", 0, Some(10_000))
                .unwrap();
            sync_h.record(t.elapsed().as_nanos() as u64).unwrap();
            blocking.release("bench-sync", "me").unwrap();
        }
        runtime.block_on(async {
            for _ in 0..BATCH {
                let t = Instant::now();
                client
                    .acquire("bench-async", "me", 0, Some(10_000))
                    .await
                    .unwrap();
                async_h.record(t.elapsed().as_nanos() as u64).unwrap();
                client.release("bench-async", "me").await.unwrap();
            }
        });
    }
    println!(
        "acquire on one node, {ROUNDS} rounds (µs): raw UDP RTT p50 {:.1} p99 {:.1} | blocking \
         p50 {:.1} p99 {:.1} | async (current_thread) p50 {:.1} p99 {:.1} | async/blocking p50 \
         {:.2}x",
        percentile_us(&rtt, 0.5),
        percentile_us(&rtt, 0.99),
        percentile_us(&sync_h, 0.5),
        percentile_us(&sync_h, 0.99),
        percentile_us(&async_h, 0.5),
        percentile_us(&async_h, 0.99),
        percentile_us(&async_h, 0.5) / percentile_us(&sync_h, 0.5),
    );
    assert_eq!(sync_h.len(), ROUNDS as u64);
    assert_eq!(async_h.len(), ROUNDS as u64);
}

/// Async guards (`AsyncClient::lock`): a 300 ms lease kept with its token for 3 s by the
/// renewer task while a rival's `try_lock` never gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_guard_keeps_a_300ms_lock_for_3s() {
    let node = start_node();
    let client = async_client(&node).await;
    let rival = async_client(&node).await;
    let options = LockOptions::new().ttl(Duration::from_millis(300));
    let guard = client.lock("aguard/kept", &options).await.unwrap();
    let token = guard.fencing_token();
    let start = Instant::now();
    let mut checks = 0;
    while start.elapsed() < Duration::from_secs(3) {
        // Not lost within 100 ms: the wait runs out (a loss would end it with `Some`).
        let waited = tokio::time::timeout(Duration::from_millis(100), guard.lost_wait()).await;
        assert!(waited.is_err(), "lost: {waited:?}");
        assert_eq!(guard.fencing_token(), token);
        assert!(!guard.is_lost());
        assert!(guard.remaining() > Duration::ZERO);
        let refused = rival.try_lock("aguard/kept", &LockOptions::new()).await;
        assert_eq!(refused.unwrap_err(), LockError::LockAcquisitionTimeout);
        checks += 1;
    }
    assert!(checks > 5);
    let status = rival.status("aguard/kept").await.unwrap();
    assert_eq!(status.holder.as_deref(), Some(guard.owner()));
    assert_eq!(status.fencing_token, token);
    guard.release().await.unwrap();
    assert_eq!(rival.status("aguard/kept").await.unwrap().hold_count, 0);
}

/// Two tasks sharing one client with default options (an owner per guard): never both
/// inside, tokens never reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_guards_with_default_options_never_both_hold() {
    let node = start_node();
    let client = async_client(&node).await;
    let inside = Arc::new(AtomicBool::new(false));
    let tokens = Arc::new(Mutex::new(HashSet::new()));
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (client, inside, tokens) = (client.clone(), inside.clone(), tokens.clone());
            tokio::spawn(async move {
                let options = LockOptions::new().wait(Duration::from_secs(60));
                for _ in 0..40 {
                    let guard = client.lock("aguard/mutex", &options).await.unwrap();
                    assert!(!inside.swap(true, Ordering::SeqCst), "both tasks inside");
                    assert!(tokens.lock().unwrap().insert(guard.fencing_token()));
                    tokio::task::yield_now().await;
                    inside.store(false, Ordering::SeqCst);
                    guard.release().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(tokens.lock().unwrap().len(), 80);
}

/// Dropping an async guard releases the lock (from a spawned task): a rival then gets it.
/// A named owner is refused a second guard until the first is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_async_guard_releases() {
    let node = start_node();
    let client = async_client(&node).await;
    let rival = async_client(&node).await;
    let named = LockOptions::new().owner("ops");
    let guard = client.lock("aguard/drop", &named).await.unwrap();
    assert!(matches!(
        client.try_lock("aguard/drop", &named).await,
        Err(LockError::InvalidArgument(_))
    ));
    assert_eq!(
        rival
            .try_lock("aguard/drop", &LockOptions::new())
            .await
            .unwrap_err(),
        LockError::LockAcquisitionTimeout
    );
    drop(guard);
    // The release runs in a task: wait (boundedly) for the server to see it.
    until_status(&rival, "aguard/drop", |s| s.hold_count == 0).await;
    let taken = rival
        .lock("aguard/drop", &LockOptions::new())
        .await
        .unwrap();
    assert_ne!(taken.owner(), "ops");
}

/// A stopped node: the guard is lost (its signal fires, in another task) before the lease's
/// validity ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_guard_loss_is_signalled_before_the_validity_ends() {
    let node = start_node();
    let client = async_client(&node).await;
    let options = LockOptions::new()
        .ttl(Duration::from_secs(5))
        .loss_margin(Duration::from_secs(2));
    let guard = client.lock("aguard/stopped", &options).await.unwrap();
    let signal = guard.lost_signal();
    let waiter = tokio::spawn(async move { (signal.wait().await, BootInstant::now()) });
    node.shutdown();
    let lost = tokio::time::timeout(Duration::from_secs(30), guard.lost_wait()).await;
    assert_eq!(lost.unwrap(), Some(LossReason::Expired));
    let (reason, woke) = waiter.await.unwrap();
    assert_eq!(reason, Some(LossReason::Expired));
    assert!(
        woke < guard.valid_until(),
        "signalled after the validity ended"
    );
    assert!(guard.is_lost());
    assert_eq!(guard.remaining(), Duration::ZERO);
}

/// The renewer task starts with the first guard and ends once the client (all clones) and
/// its guards are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_renewer_ends_with_the_client_and_its_guards() {
    let node = start_node();
    let client = async_client(&node).await;
    assert!(
        client.guards_renewer().upgrade().is_none(),
        "started lazily"
    );
    let guard = client
        .lock("aguard/life", &LockOptions::new())
        .await
        .unwrap();
    let alive = client.guards_renewer();
    assert!(alive.upgrade().is_some());
    let observer = async_client(&node).await;
    drop(client);
    assert!(alive.upgrade().is_some(), "the guard keeps it");
    assert!(!guard.is_lost());
    drop(guard);
    let start = Instant::now();
    while alive.upgrade().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the renewer task did not end"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    until_status(&observer, "aguard/life", |s| s.hold_count == 0).await;
}

/// A 300 ms lease kept with its token for 3 s by the async renewer through 20 % loss (each
/// way), duplication and reordering (the lossy relay), while a rival never gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_guard_keeps_a_300ms_lock_through_20_percent_loss() {
    let node = start_node();
    let relay = Relay::start(node.local_addr(), 0.2, 0.05, 0x7a11);
    let client = AsyncClient::new(ClientConfig::new(vec![relay.addr]))
        .await
        .unwrap();
    let rival = async_client(&node).await;
    let options = LockOptions::new()
        .ttl(Duration::from_millis(300))
        .wait(Duration::from_secs(10));
    let guard = client.lock("aguard/lossy", &options).await.unwrap();
    let token = guard.fencing_token();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let waited = tokio::time::timeout(Duration::from_millis(100), guard.lost_wait()).await;
        assert!(waited.is_err(), "lost: {waited:?}");
        assert_eq!(guard.fencing_token(), token);
        let refused = rival.try_lock("aguard/lossy", &LockOptions::new()).await;
        assert_eq!(refused.unwrap_err(), LockError::LockAcquisitionTimeout);
    }
    let status = rival.status("aguard/lossy").await.unwrap();
    assert_eq!(status.fencing_token, token);
    let dropped = relay.dropped.load(Ordering::Relaxed);
    assert!(
        dropped > 10,
        "the relay lost too little to test anything: {dropped}"
    );
    guard.release().await.unwrap();
}

/// Issue 11's target with a guard: one runtime thread holds a guard whose 150 ms lease the
/// renewer task renews about every 50 ms, and a 10 ms interval beside it keeps its schedule
/// (the renewals never block the thread). Prints the lateness; the bound is generous.
#[tokio::test(flavor = "current_thread")]
async fn a_timer_keeps_its_schedule_beside_a_renewed_guard() {
    let node = start_node();
    let client = async_client(&node).await;
    let options = LockOptions::new().ttl(Duration::from_millis(150));
    let guard = client.lock("aguard/timer", &options).await.unwrap();
    let (late_max, late_p50) = interval_lateness(80).await;
    println!(
        "10 ms interval beside a guard renewed every ~50 ms: lateness max {late_max:?}, \
         median {late_p50:?} over 80 ticks"
    );
    assert!(late_max < Duration::from_millis(50), "{late_max:?}");
    assert_eq!(guard.lost(), None, "renewed while the timer ran");
    guard.release().await.unwrap();
}

/// A waiting `lock()` future dropped (as `tokio::time::timeout` or `select!` drop it) leaves
/// the server's queue (CANCEL_WAIT): the queue empties, and the lock freed later goes to
/// nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_lock_future_leaves_the_queue() {
    let node = start_node();
    let client = async_client(&node).await;
    let holder = client
        .lock("aguard/queue", &LockOptions::new())
        .await
        .unwrap();
    let wait = LockOptions::new().wait(Duration::from_secs(60));
    let waiting = client.lock("aguard/queue", &wait);
    // Cancelled once it is surely queued: the server counts it as a waiter.
    let observer = async_client(&node).await;
    let queued = async {
        until_status(&observer, "aguard/queue", |s| s.waiter_count == 1).await;
    };
    tokio::select! {
        taken = waiting => panic!("the waiter got the lock while it was held: {taken:?}"),
        () = queued => {}
    }
    until_status(&observer, "aguard/queue", |s| s.waiter_count == 0).await;
    assert_eq!(client.stats().cancels, 1);
    holder.release().await.unwrap();
    let status = until_status(&observer, "aguard/queue", |s| s.hold_count == 0).await;
    assert_eq!(status.holder, None, "nobody was granted the lock");
}

/// Discovery (spec §7.1.8), as the blocking client's `it::discovery` test: an async client
/// given one node of a 3-node cluster learns the others from its member table, locks on
/// every shard, and keeps locking after that node is gone (every shard then led by a node
/// it was not given).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_client_given_one_node_keeps_locking_after_that_node_is_gone() {
    use udplock::cluster::{start_local_cluster, ClusterConfig, ClusterNode};
    use udplock_protocol::shard_of;

    const SHARDS: u32 = 8;
    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = SHARDS;
    let mut nodes: Vec<ClusterNode> = start_local_cluster(3, &template).expect("cluster starts");
    let mut config = ClientConfig::new(vec![nodes[0].local_addr()]);
    config.shards = SHARDS;
    let client = AsyncClient::new(config).await.expect("client");
    // One resource per shard.
    let mut shards = HashSet::new();
    let resources: Vec<String> = (0..1_000)
        .map(|i| format!("jobs/{i}"))
        .filter(|r| shards.insert(shard_of(r.as_bytes(), SHARDS)))
        .collect();
    assert_eq!(resources.len(), SHARDS as usize);

    // Lock on every shard until the member table has come back (read by whichever call is
    // waiting when it arrives) and every node is a candidate.
    let mut all: Vec<_> = nodes.iter().map(ClusterNode::local_addr).collect();
    all.sort();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for r in &resources {
            let lease = client.acquire(r, "w", 5_000, Some(10_000)).await;
            assert_eq!(lease.expect("acquire").hold_count, 1);
            assert_eq!(client.release(r, "w").await, Ok(0));
        }
        let mut candidates = client.candidates();
        candidates.sort();
        if candidates == all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client never learned every node: {candidates:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let gone = nodes.remove(0);
    tokio::task::spawn_blocking(move || gone.shutdown())
        .await
        .expect("node 1 stops");
    for r in &resources {
        let lease = client
            .acquire(r, "w", 10_000, Some(10_000))
            .await
            .unwrap_or_else(|e| panic!("{r} (shard {}): {e}", shard_of(r.as_bytes(), SHARDS)));
        assert_eq!(lease.hold_count, 1);
        assert_eq!(client.release(r, "w").await, Ok(0));
    }
}
