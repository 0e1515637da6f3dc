//! KEEPALIVE on a real single node over loopback (spec §4.11): many holds renewed by a few
//! datagrams keep past their TTL; the reply's bitmap leaves out a released hold and a token
//! whose lock went to another client; a single node takes a keepalive of any shard count.

use std::thread::sleep;
use std::time::Duration;

use udplock::client::{Client, ClientConfig};
use udplock::error::LockError;

/// A client of a single node, which has one shard: KEEPALIVE names the shard count.
fn client(node: &udplock::single::SingleNode) -> Client {
    let mut config = ClientConfig::new(vec![node.local_addr()]);
    config.shards = 1;
    Client::new(config).unwrap()
}

#[test]
fn a_hundred_locks_kept_by_two_keepalives_a_period_outlive_their_ttl() {
    const TTL_MS: u32 = 400;
    let node = super::start_node();
    let c = client(&node);
    let resources: Vec<String> = (0..100).map(|i| format!("keepalive/{i}")).collect();
    let tokens: Vec<u64> = resources
        .iter()
        .map(|r| {
            c.try_acquire(r, "holder", Some(TTL_MS))
                .unwrap()
                .fencing_token
        })
        .collect();
    assert!(resources.iter().all(|r| c.shard_of(r) == 0));
    // Three TTLs' worth of time, renewed every quarter TTL: 64 tokens, then 36, per period.
    for _ in 0..12 {
        sleep(Duration::from_millis(u64::from(TTL_MS) / 4));
        for chunk in tokens.chunks(64) {
            let report = c.keepalive(0, chunk, None).unwrap();
            assert_eq!(report.renewed_tokens().count(), chunk.len(), "{report:?}");
            assert!(report.lease_ms >= TTL_MS && report.lease_ms < 2 * TTL_MS);
            assert!(report.valid_until > udplock::clock::BootInstant::now());
        }
    }
    // Still held by their first holder, under their first tokens.
    for (resource, &token) in resources.iter().zip(&tokens) {
        let status = c.status(resource).unwrap();
        assert_eq!(status.holder.as_deref(), Some("holder"));
        assert_eq!(status.fencing_token, token);
    }
}

#[test]
fn a_released_hold_and_a_regranted_token_are_not_renewed() {
    let node = super::start_node();
    let a = client(&node);
    let b = client(&node);
    let kept = a
        .try_acquire("kept", "a", Some(5_000))
        .unwrap()
        .fencing_token;
    let released = a
        .try_acquire("released", "a", Some(5_000))
        .unwrap()
        .fencing_token;
    let moved = a
        .try_acquire("moved", "a", Some(5_000))
        .unwrap()
        .fencing_token;
    assert_eq!(a.release("released", "a").unwrap(), 0);
    assert_eq!(a.release("moved", "a").unwrap(), 0);
    // The lock of `moved` goes to b under a new token, with a short lease.
    let b_lease = b.try_acquire("moved", "b", Some(300)).unwrap();
    assert!(b_lease.fencing_token > moved);

    let report = a
        .keepalive(0, &[kept, released, moved], Some(10_000))
        .unwrap();
    assert_eq!(report.renewed_bitmap, 0b001, "{report:?}");
    assert_eq!(report.lost_tokens().collect::<Vec<_>>(), [released, moved]);
    assert!(report.lease_ms >= 10_000);
    // b's hold was not extended by a's keepalive: its lease stays at most its 300 ms.
    assert!(b.status("moved").unwrap().remaining_ttl_ms <= 300);
    assert_eq!(b.status("kept").unwrap().fencing_token, kept);
    assert!(b.status("kept").unwrap().remaining_ttl_ms > 5_000);
}

/// A single node has one shard, so one table issued every token it granted: a client left
/// with its default count of 64 shards renews there too (spec §4.11, "Why the shard count";
/// a node of many shards refuses another count: `core::node` tests).
#[test]
fn a_single_node_renews_for_a_client_of_any_shard_count() {
    let node = super::start_node();
    let c = Client::connect(&[node.local_addr()]).unwrap();
    assert_eq!(c.config().shards, 64);
    let token = c.try_acquire("r", "a", Some(5_000)).unwrap().fencing_token;
    let shard = c.shard_of("r");
    let report = c
        .keepalive(shard, &[token, token + 1], Some(60_000))
        .unwrap();
    assert_eq!(report.renewed_bitmap, 0b01, "only the hold's own token");
    assert!(c.status("r").unwrap().remaining_ttl_ms > 30_000);
    // Refused by the client itself: more than 64 tokens, or a shard beyond its count.
    assert!(matches!(
        c.keepalive(0, &[token; 65], None),
        Err(LockError::InvalidArgument(_))
    ));
    assert!(matches!(
        c.keepalive(64, &[token], None),
        Err(LockError::InvalidArgument(_))
    ));
}
