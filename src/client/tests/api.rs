//! The public operations end to end against a fake server: replies mapped to results and
//! errors, arguments refused before anything is sent, configuration checks.

use super::*;

#[test]
fn client_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Client>();
}

#[test]
fn round_trip_maps_replies() {
    let server = FakeServer::spawn(|event| {
        let Event::Request(req, _) = event else {
            return Vec::new();
        };
        let reply = match req.body {
            RequestBody::Acquire { resource, .. } => match resource {
                b"busy" => reply_to(&req, Status::LockAcquisitionTimeout, |_| {}),
                b"full" => reply_to(&req, Status::Overloaded, |r| {
                    r.hint = Hint::RetryAfter { ms: 25 }
                }),
                b"odd" => reply_to(&req, Status::Unsupported, |r| {
                    r.msg_type = MessageType::ErrorReply
                }),
                _ => reply_to(&req, Status::Ok, |r| {
                    r.hold_count = 1;
                    r.fencing_token = 42;
                    r.lease_ms = 5_000;
                }),
            },
            RequestBody::Release { .. } => reply_to(&req, Status::Ok, |_| {}),
            RequestBody::Renew { .. } => reply_to(&req, Status::LockNotHeld, |_| {}),
            RequestBody::Status {
                resource: b"missing",
            } => reply_to(&req, Status::ResourceDoesNotExist, |_| {}),
            RequestBody::Status { .. } => {
                reply_with_holder(&req, Status::Ok, b"worker-\xff", |r| {
                    r.hold_count = 2;
                    r.fencing_token = 42;
                    r.lease_ms = 1_234;
                    r.waiter_count = 3;
                })
            }
            RequestBody::Configure { .. } => reply_to(&req, Status::RequestExpired, |_| {}),
            // The second of the listed holds renewed, for 3 s at least.
            RequestBody::Keepalive { .. } => reply_to(&req, Status::Ok, |r| {
                r.hold_count = 1;
                r.fencing_token = 0b10;
                r.lease_ms = 3_000;
            }),
            RequestBody::CancelWait { .. } => reply_to(&req, Status::Unsupported, |_| {}),
        };
        vec![reply]
    });
    let client = client_for(&server, |_| {});
    let before = BootInstant::now();
    let lease = client
        .acquire("orders/42", "worker-1", 1_000, Some(5_000))
        .unwrap();
    assert_eq!(lease.resource_id, "orders/42");
    assert_eq!(lease.client_id, "worker-1");
    assert_eq!(lease.fencing_token, 42);
    assert_eq!(lease.hold_count, 1);
    assert_eq!(lease.ttl_ms, 5_000);
    assert!(lease.is_valid());
    // (core time is whole microseconds, rounded down)
    assert!(lease.valid_until >= before + StdDuration::from_micros(4_949_999));
    assert!(lease.valid_until <= BootInstant::now() + StdDuration::from_millis(4_950));
    assert_eq!(client.acquire_lock("orders/42", "worker-1", 0), Ok(()));
    assert_eq!(client.release("orders/42", "worker-1"), Ok(0));
    assert_eq!(client.release_lock("orders/42", "worker-1"), Ok(()));
    assert_eq!(
        client.status("orders/42").unwrap(),
        LockStatus {
            resource_id: "orders/42".into(),
            holder: Some("worker-\u{fffd}".into()),
            holder_truncated: false,
            hold_count: 2,
            fencing_token: 42,
            remaining_ttl_ms: 1_234,
            waiter_count: 3,
        }
    );
    assert_eq!(
        client.status("missing"),
        Err(LockError::ResourceDoesNotExist)
    );
    assert_eq!(
        client.acquire("busy", "w", 0, None),
        Err(LockError::LockAcquisitionTimeout)
    );
    assert_eq!(
        client.try_acquire("full", "w", None),
        Err(LockError::Overloaded { retry_after_ms: 25 })
    );
    assert!(matches!(
        client.acquire("odd", "w", 0, None),
        Err(LockError::InternalError(_))
    ));
    assert_eq!(
        client.renew("orders/42", "w", None),
        Err(LockError::LockNotHeld)
    );
    assert_eq!(
        client.configure("orders/42", Some(10)),
        Err(LockError::OutcomeUnknown)
    );
    // KEEPALIVE (spec §4.11): bit 1 set, so the second token was renewed and the first lost.
    let before = BootInstant::now();
    let report = client.keepalive(3, &[7, 9], None).unwrap();
    assert_eq!((report.renewed_bitmap, report.lease_ms), (0b10, 3_000));
    assert_eq!(report.renewed_tokens().collect::<Vec<_>>(), [9]);
    assert_eq!(report.lost_tokens().collect::<Vec<_>>(), [7]);
    assert!(
        report.valid_until > before
            && report.valid_until < before + std::time::Duration::from_secs(3)
    );
    let stats = client.stats();
    // Only a retransmission can draw a second answer, which the client then drops as
    // stray; a busy machine may make the client retransmit before the fake server answers.
    assert!(
        stats.dropped_datagrams <= stats.retransmits,
        "{} datagrams dropped with {} retransmits",
        stats.dropped_datagrams,
        stats.retransmits
    );
    assert!(stats.srtt.is_some());
}

#[test]
fn invalid_arguments_are_refused_before_sending() {
    let requests = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&requests);
    let server = FakeServer::spawn(move |event| {
        if let Event::Request(..) = event {
            count.fetch_add(1, Ordering::Relaxed);
        }
        Vec::new()
    });
    let client = client_for(&server, |_| {});
    let long = "x".repeat(256);
    let invalid = |r: Result<Lease, LockError>| matches!(r, Err(LockError::InvalidArgument(_)));
    assert!(invalid(client.acquire("", "c", 0, None)));
    assert!(invalid(client.acquire("r", "", 0, None)));
    assert!(invalid(client.acquire(&long, "c", 0, None)));
    assert!(invalid(client.acquire("r", &long, 0, None)));
    assert!(invalid(client.acquire("r", "c", WAIT_MS_MAX + 1, None)));
    assert!(invalid(client.acquire("r", "c", 0, Some(0))));
    assert!(invalid(client.renew("r", "", None)));
    assert!(matches!(
        client.release(&long, "c"),
        Err(LockError::InvalidArgument(_))
    ));
    assert!(matches!(
        client.status(""),
        Err(LockError::InvalidArgument(_))
    ));
    assert!(matches!(
        client.configure("r", Some(0)),
        Err(LockError::InvalidArgument(_))
    ));
    thread::sleep(StdDuration::from_millis(20));
    assert_eq!(requests.load(Ordering::Relaxed), 0);

    // A 255-byte id is fine (it is sent).
    let max = "y".repeat(255);
    // (the fake never answers)
    assert_eq!(
        client.try_acquire(&max, &max, None),
        Err(LockError::Unavailable)
    );
    assert!(requests.load(Ordering::Relaxed) > 0);

    assert!(matches!(
        Client::connect(&[]),
        Err(LockError::InvalidArgument(_))
    ));
    let mut config = ClientConfig::new(vec![server.addr]);
    config.drift_bound_ppm = 1_000_000;
    assert!(matches!(
        Client::new(config),
        Err(LockError::InvalidArgument(_))
    ));
}

#[test]
fn session_ids_are_random_and_non_zero() {
    let server = FakeServer::spawn(|_| Vec::new());
    let a = client_for(&server, |_| {});
    let b = client_for(&server, |_| {});
    assert_ne!(a.session_id(), 0);
    assert_ne!(a.session_id(), b.session_id());
}

#[test]
fn shards_are_validated() {
    let server: SocketAddr = (Ipv4Addr::LOCALHOST, 7100).into();
    for shards in [0, SHARDS_MAX + 1] {
        let mut config = ClientConfig::new(vec![server]);
        config.shards = shards;
        assert!(matches!(
            config.validate(),
            Err(LockError::InvalidArgument(_))
        ));
    }
    let mut config = ClientConfig::new(vec![server]);
    assert_eq!(config.shards, SHARDS_DEFAULT);
    config.shards = SHARDS_MAX;
    assert_eq!(config.validate(), Ok(()));
}
