//! The lock service as a user of the crate sees it: mutual exclusion and fencing under
//! contention, waiting and timeouts, re-entrancy, expiry, and the mission's API.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udplock::{BootInstant, Client, LockError};

use super::start_node;

#[test]
fn contending_clients_never_overlap_and_tokens_increase() {
    let node = start_node();
    let addr = node.local_addr();
    let inside = Arc::new(AtomicBool::new(false));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let grants = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (inside, tokens, grants) = (inside.clone(), tokens.clone(), grants.clone());
            std::thread::spawn(move || {
                // Each thread its own client (own socket and session), like separate processes.
                let client = Client::connect(&[addr]).unwrap();
                let me = format!("worker-{i}");
                for _ in 0..100 {
                    let lease = client.acquire("shared", &me, 10_000, Some(10_000)).unwrap();
                    assert!(
                        !inside.swap(true, Ordering::SeqCst),
                        "two clients inside the critical section"
                    );
                    tokens.lock().unwrap().push(lease.fencing_token);
                    grants.fetch_add(1, Ordering::Relaxed);
                    std::thread::yield_now();
                    inside.store(false, Ordering::SeqCst);
                    assert_eq!(client.release("shared", &me).unwrap(), 0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(grants.load(Ordering::Relaxed), 600);
    // Grants happened one after another, so tokens in grant order strictly increase.
    let tokens = tokens.lock().unwrap();
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens not increasing"
    );
}

#[test]
fn the_missions_api_acquire_and_release() {
    let node = start_node();
    let client = Client::connect(&[node.local_addr()]).unwrap();
    client.acquire_lock("orders/1", "alice", 1_000).unwrap();
    assert_eq!(
        client.acquire_lock("orders/1", "bob", 0),
        Err(LockError::LockAcquisitionTimeout)
    );
    assert_eq!(
        client.release_lock("orders/1", "bob"),
        Err(LockError::LockNotHeld)
    );
    client.release_lock("orders/1", "alice").unwrap();
    // Released twice: alice no longer holds it (spec §6.1), though the lock is now unknown.
    assert_eq!(
        client.release_lock("orders/1", "alice"),
        Err(LockError::LockNotHeld)
    );
    assert_eq!(
        client.configure("orders/1", None),
        Err(LockError::ResourceDoesNotExist),
        "nothing to clear"
    );
    client.acquire_lock("orders/1", "bob", 0).unwrap();
}

#[test]
fn a_waiter_times_out_after_its_wait() {
    let node = start_node();
    let client = Client::connect(&[node.local_addr()]).unwrap();
    client.acquire("busy", "holder", 0, Some(60_000)).unwrap();
    let started = Instant::now();
    let r = client.acquire("busy", "waiter", 300, None);
    let waited = started.elapsed();
    assert_eq!(r.unwrap_err(), LockError::LockAcquisitionTimeout);
    assert!(
        waited >= Duration::from_millis(300),
        "gave up early: {waited:?}"
    );
    let status = client.status("busy").unwrap();
    assert_eq!(status.holder.as_deref(), Some("holder"));
    assert_eq!(status.waiter_count, 0);
}

#[test]
fn waiters_are_granted_in_fifo_order_on_release() {
    let node = start_node();
    let addr = node.local_addr();
    let holder = Client::connect(&[addr]).unwrap();
    let first = holder.acquire("fifo", "holder", 0, Some(60_000)).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..4 {
        let order = order.clone();
        threads.push(std::thread::spawn(move || {
            let c = Client::connect(&[addr]).unwrap();
            let id = format!("waiter-{i}");
            let lease = c.acquire("fifo", &id, 20_000, Some(60_000)).unwrap();
            order.lock().unwrap().push((i, lease.fencing_token));
            c.release("fifo", &id).unwrap();
        }));
        // Queue them in a known order.
        let want = i + 1;
        while holder.status("fifo").unwrap().waiter_count < want {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    holder.release("fifo", "holder").unwrap();
    for t in threads {
        t.join().unwrap();
    }
    let order = order.lock().unwrap();
    let who: Vec<u32> = order.iter().map(|&(i, _)| i).collect();
    assert_eq!(who, vec![0, 1, 2, 3]);
    assert!(order.iter().all(|&(_, t)| t > first.fencing_token));
}

#[test]
fn reentrant_holds_need_as_many_releases() {
    let node = start_node();
    let c = Client::connect(&[node.local_addr()]).unwrap();
    let a = c.acquire("re", "me", 0, None).unwrap();
    let b = c.acquire("re", "me", 0, None).unwrap();
    assert_eq!((a.hold_count, b.hold_count), (1, 2));
    assert_eq!(a.fencing_token, b.fencing_token, "re-entry keeps the token");
    assert_eq!(c.release("re", "me").unwrap(), 1);
    assert_eq!(
        c.try_acquire("re", "other", None).unwrap_err(),
        LockError::LockAcquisitionTimeout
    );
    assert_eq!(c.release("re", "me").unwrap(), 0);
    let other = c.try_acquire("re", "other", None).unwrap();
    assert!(other.fencing_token > a.fencing_token);
}

#[test]
fn an_unrenewed_lock_expires_and_the_waiter_gets_it() {
    let node = start_node();
    let c = Client::connect(&[node.local_addr()]).unwrap();
    let held = c.acquire("lease", "sleepy", 0, Some(200)).unwrap();
    assert!(held.valid_until <= BootInstant::now() + Duration::from_millis(200));
    let next = c.acquire("lease", "patient", 5_000, None).unwrap();
    // Granted only once the first lease ran out at the server, which is never before the end
    // of the first holder's own (conservative) count.
    assert!(
        BootInstant::now() >= held.valid_until,
        "granted while the first lease ran"
    );
    assert!(next.fencing_token > held.fencing_token);
    assert_eq!(c.release("lease", "sleepy"), Err(LockError::LockNotHeld));
}

#[test]
fn renew_extends_and_configure_sets_the_default() {
    let node = start_node();
    let c = Client::connect(&[node.local_addr()]).unwrap();
    c.configure("cfg", Some(1_234)).unwrap();
    let l = c.acquire("cfg", "me", 0, None).unwrap();
    assert_eq!(l.ttl_ms, 1_234);
    std::thread::sleep(Duration::from_millis(300));
    let r = c.renew("cfg", "me", Some(5_000)).unwrap();
    assert_eq!((r.ttl_ms, r.fencing_token), (5_000, l.fencing_token));
    std::thread::sleep(Duration::from_millis(1_100));
    // Without the renewal the 1,234 ms lease would have run out by now.
    let s = c.status("cfg").unwrap();
    assert_eq!(s.holder.as_deref(), Some("me"));
    assert!(s.remaining_ttl_ms > 2_000, "{s:?}");
    assert_eq!(
        c.renew("cfg", "stranger", None).unwrap_err(),
        LockError::LockNotHeld
    );
}

#[test]
fn bad_arguments_are_refused_before_sending() {
    let node = start_node();
    let c = Client::connect(&[node.local_addr()]).unwrap();
    let long = "x".repeat(256);
    assert!(matches!(
        c.acquire_lock("", "me", 0),
        Err(LockError::InvalidArgument(_))
    ));
    assert!(matches!(
        c.acquire_lock(&long, "me", 0),
        Err(LockError::InvalidArgument(_))
    ));
    assert!(matches!(
        c.acquire_lock("r", &long, 0),
        Err(LockError::InvalidArgument(_))
    ));
    // The longest legal ids work.
    let max = "y".repeat(255);
    c.acquire_lock(&max, &max, 0).unwrap();
    assert_eq!(
        c.status(&max).unwrap().holder.as_deref(),
        Some(max.as_str())
    );
}

#[test]
fn no_server_means_unavailable() {
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut config = udplock::ClientConfig::new(vec![silent.local_addr().unwrap()]);
    config.request_timeout_ms = 200;
    let c = Client::new(config).unwrap();
    assert_eq!(c.status("r").unwrap_err(), LockError::Unavailable);
}

/// Spec §7.2.4: a node restarted at the same address issues tokens above its predecessor's
/// (no disk: the first token is the wall clock in µs), and with a startup grace grants
/// nothing until the grace ends; the client waits the grace out within its timeout.
#[test]
fn a_restarted_node_keeps_tokens_increasing_and_honours_its_grace() {
    use udplock::single::{SingleConfig, SingleNode};
    let first = super::start_node();
    let addr = first.local_addr();
    let c = Client::connect(&[addr]).unwrap();
    let before = c.acquire("restart", "old-holder", 0, Some(300)).unwrap();
    first.shutdown();

    let mut config = SingleConfig::new(addr);
    config.table.startup_grace_ms = 300;
    let started = Instant::now();
    let second = SingleNode::start(config).unwrap();
    // Within the grace, a try without waiting is refused with a retry hint...
    match c.try_acquire("restart", "new-holder", None) {
        Err(LockError::Overloaded { retry_after_ms }) => assert!(retry_after_ms <= 300),
        other => panic!("granted during the startup grace: {other:?}"),
    }
    // ...and an acquire that may wait is granted once the grace is over.
    let after = c.acquire("restart", "new-holder", 2_000, None).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(after.fencing_token > before.fencing_token);
    drop(second);
}

/// Spec §7.2.4, without an operator: a node killed and restarted with the same lease horizon
/// file grants nothing until the leases of its predecessor have run out.
#[test]
fn the_lease_horizon_file_makes_a_restart_wait_out_old_leases() {
    use udplock::single::{SingleConfig, SingleNode};
    let dir = std::env::temp_dir().join(format!("udplock-horizon-{}", std::process::id()));
    let file = dir.join("node.horizon");
    let _ = std::fs::remove_file(&file);
    let mut config = SingleConfig::new("127.0.0.1:0".parse().unwrap());
    config.state_file = Some(file.clone());
    let first = SingleNode::start(config.clone()).unwrap();
    let c = Client::connect(&[first.local_addr()]).unwrap();
    let before_grant = Instant::now();
    c.acquire("horizon", "old-holder", 0, Some(400)).unwrap();
    first.shutdown();

    let second = SingleNode::start(config).unwrap();
    let c = Client::connect(&[second.local_addr()]).unwrap();
    match c.try_acquire("horizon", "new-holder", None) {
        Err(LockError::Overloaded { retry_after_ms }) => assert!(retry_after_ms <= 1_400),
        other => panic!("granted while an old lease may run: {other:?}"),
    }
    c.acquire("horizon", "new-holder", 3_000, None).unwrap();
    assert!(
        before_grant.elapsed() >= Duration::from_millis(400),
        "granted before the old lease ran out"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}
