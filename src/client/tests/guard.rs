//! Lock guards against a scripted fake server: renewals keep the hold and its token; a
//! refusal, another token or silence lose it (and wake the waiters); drop releases; owners;
//! options; the renewer thread's life.

use super::*;
use crate::client::{LockGuard, LockOptions, LossReason};
use std::time::Duration as Std;

/// How the fake answers RENEW.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Renew {
    Grant,
    Refuse,
    Token(u64),
    Silent,
    /// FORBIDDEN, to RENEW and KEEPALIVE alike (the key may no longer act for the owner).
    Forbid,
}

/// The fake's script and what it saw: (message type, client id, ttl) of every lock request
/// (for a KEEPALIVE, the tokens it lists in place of a client id). A retransmission (the same
/// request id) is the same request: answered again, not seen again, so a loaded machine that
/// delays an answer past the client's retransmission timer does not add a request.
#[derive(Clone)]
struct Script {
    /// How RENEW is answered, and KEEPALIVE too (spec §4.11): `Grant` sets the bit of token 5
    /// (the grant's), `Refuse` and `Token` leave every bit clear (the server no longer has a
    /// hold under token 5), `Silent` answers nothing.
    renew: Arc<Mutex<Renew>>,
    /// KEEPALIVE refused as INVALID_ARGUMENT (a client whose shard count is not the
    /// cluster's): the renewer must go by RENEW.
    keepalive_refused: Arc<Mutex<bool>>,
    /// The hold count every ACQUIRE reply names.
    hold_count: Arc<Mutex<u32>>,
    lease_ms: u32,
    seen: Arc<Mutex<Vec<(MessageType, String, u32)>>>,
    /// The (session, request) ids seen, to tell a retransmission from a new request.
    ids: Arc<Mutex<std::collections::HashSet<(u64, u64)>>>,
    /// Every datagram's message type, retransmissions included.
    datagrams: Arc<Mutex<Vec<MessageType>>>,
}

impl Script {
    fn new(lease_ms: u32) -> Script {
        Script {
            renew: Arc::new(Mutex::new(Renew::Grant)),
            keepalive_refused: Arc::new(Mutex::new(false)),
            hold_count: Arc::new(Mutex::new(1)),
            lease_ms,
            seen: Arc::default(),
            ids: Arc::default(),
            datagrams: Arc::default(),
        }
    }

    fn set(&self, renew: Renew) {
        *self.renew.lock().unwrap() = renew;
    }

    fn refuse_keepalives(&self) {
        *self.keepalive_refused.lock().unwrap() = true;
    }

    /// Renewal requests seen: RENEWs and KEEPALIVEs.
    fn renewals(&self) -> usize {
        self.count(MessageType::Renew) + self.count(MessageType::Keepalive)
    }

    /// Waits (up to a generous bound) until the fake has seen `n` renewal requests.
    fn wait_for_renewals(&self, n: usize) {
        let end = BootInstant::now() + StdDuration::from_secs(20);
        while self.renewals() < n {
            assert!(
                BootInstant::now() < end,
                "only {} renewals",
                self.renewals()
            );
            thread::sleep(StdDuration::from_millis(5));
        }
    }

    /// Renewal datagrams received, retransmissions included.
    fn renewal_datagrams(&self) -> usize {
        let datagrams = self.datagrams.lock().unwrap();
        datagrams
            .iter()
            .filter(|&&k| k == MessageType::Renew || k == MessageType::Keepalive)
            .count()
    }

    fn count(&self, kind: MessageType) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|(k, _, _)| *k == kind).count()
    }

    fn clients(&self, kind: MessageType) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, c, _)| c.clone())
            .collect()
    }

    /// Waits (up to a generous bound) until the fake has seen `n` requests of `kind`.
    fn wait_for(&self, kind: MessageType, n: usize) {
        let end = BootInstant::now() + StdDuration::from_secs(20);
        while self.count(kind) < n {
            assert!(
                BootInstant::now() < end,
                "only {} {kind:?}",
                self.count(kind)
            );
            thread::sleep(StdDuration::from_millis(5));
        }
    }

    fn server(&self) -> FakeServer {
        let script = self.clone();
        FakeServer::spawn(move |event| {
            let Event::Request(req, _) = event else {
                return Vec::new();
            };
            let (client, ttl) = match req.body {
                RequestBody::Acquire { client, ttl_ms, .. }
                | RequestBody::Renew { client, ttl_ms, .. } => {
                    (String::from_utf8_lossy(client).into_owned(), ttl_ms)
                }
                RequestBody::Release { client, .. } => {
                    (String::from_utf8_lossy(client).into_owned(), 0)
                }
                RequestBody::Keepalive { tokens, ttl_ms, .. } => {
                    (format!("{:?}", tokens.iter().collect::<Vec<_>>()), ttl_ms)
                }
                _ => (String::new(), 0),
            };
            script.datagrams.lock().unwrap().push(req.body.msg_type());
            if script
                .ids
                .lock()
                .unwrap()
                .insert((req.session_id, req.request_id))
            {
                script
                    .seen
                    .lock()
                    .unwrap()
                    .push((req.body.msg_type(), client, ttl));
            }
            let lease_ms = script.lease_ms;
            let reply = match req.body {
                RequestBody::Acquire { .. } => {
                    let holds = *script.hold_count.lock().unwrap();
                    reply_to(&req, Status::Ok, |r| {
                        r.hold_count = holds;
                        r.fencing_token = 5;
                        r.lease_ms = lease_ms;
                    })
                }
                RequestBody::Renew { .. } => match *script.renew.lock().unwrap() {
                    Renew::Grant => reply_to(&req, Status::Ok, |r| {
                        r.hold_count = 1;
                        r.fencing_token = 5;
                        r.lease_ms = lease_ms;
                    }),
                    Renew::Token(token) => reply_to(&req, Status::Ok, |r| {
                        r.hold_count = 1;
                        r.fencing_token = token;
                        r.lease_ms = lease_ms;
                    }),
                    Renew::Refuse => reply_to(&req, Status::LockNotHeld, |_| {}),
                    Renew::Forbid => reply_to(&req, Status::Forbidden, |_| {}),
                    Renew::Silent => return Vec::new(),
                },
                RequestBody::Keepalive { .. } if *script.keepalive_refused.lock().unwrap() => {
                    reply_to(&req, Status::InvalidArgument, |_| {})
                }
                RequestBody::Keepalive { tokens, .. } => {
                    let bitmap = match *script.renew.lock().unwrap() {
                        Renew::Grant => tokens
                            .iter()
                            .enumerate()
                            .filter(|&(_, token)| token == 5)
                            .fold(0u64, |bits, (i, _)| bits | 1 << i),
                        Renew::Refuse | Renew::Token(_) => 0,
                        Renew::Silent => return Vec::new(),
                        Renew::Forbid => return vec![reply_to(&req, Status::Forbidden, |_| {})],
                    };
                    reply_to(&req, Status::Ok, |r| {
                        r.hold_count = bitmap.count_ones();
                        r.fencing_token = bitmap;
                        r.lease_ms = if bitmap == 0 { 0 } else { lease_ms };
                    })
                }
                RequestBody::Release { .. } => reply_to(&req, Status::Ok, |_| {}),
                _ => return Vec::new(),
            };
            vec![reply]
        })
    }
}

fn ms(n: u64) -> Std {
    Std::from_millis(n)
}

#[test]
fn guards_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<LockGuard>();
    assert_send_sync::<crate::client::LostSignal>();
}

/// A 300 ms lease renewed many times over by KEEPALIVE: never lost, same token; the acquire
/// asks for the TTL under the guard's own owner, every keepalive names the grant's token
/// and keeps the hold's TTL (ttl 0).
#[test]
fn renewals_keep_the_guard_and_its_token() {
    let script = Script::new(300);
    let server = script.server();
    let client = client_for(&server, |_| {});
    let guard = client
        .lock("g/renew", &LockOptions::new().ttl(ms(300)))
        .unwrap();
    script.wait_for_renewals(6);
    assert_eq!(guard.lost(), None);
    assert_eq!(guard.fencing_token(), 5);
    assert!(guard.remaining() > Std::ZERO);
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(script.count(MessageType::Renew), 0, "{seen:?}");
    for (kind, named, ttl) in &seen {
        match kind {
            MessageType::Acquire => assert_eq!((named.as_str(), *ttl), (guard.owner(), 300)),
            MessageType::Keepalive => assert_eq!((named.as_str(), *ttl), ("[5]", 0)),
            _ => panic!("{kind:?} {named} {ttl}"),
        }
    }
}

/// A client whose shard count is not the cluster's has its KEEPALIVE refused (INVALID_ARGUMENT):
/// the renewer goes by RENEW, under the guard's owner with its TTL, and the guard is kept.
#[test]
fn a_refused_keepalive_falls_back_to_renew_and_keeps_the_guard() {
    let script = Script::new(300);
    script.refuse_keepalives();
    let server = script.server();
    let client = client_for(&server, |_| {});
    let guard = client
        .lock("g/fallback", &LockOptions::new().ttl(ms(300)))
        .unwrap();
    script.wait_for(MessageType::Renew, 4);
    assert_eq!(guard.lost(), None);
    assert_eq!(guard.fencing_token(), 5);
    assert_eq!(
        script.count(MessageType::Keepalive),
        1,
        "tried once, then RENEW only"
    );
    let renews: Vec<_> = script.seen.lock().unwrap().clone();
    for (kind, owner, ttl) in renews.iter().filter(|s| s.0 == MessageType::Renew) {
        assert_eq!((owner.as_str(), *ttl), (guard.owner(), 300), "{kind:?}");
    }
}

/// LOCK_NOT_HELD to a renewal: lost at once (well before the validity would end), the
/// signal fires in another thread, and nothing is released.
#[test]
fn a_refused_renewal_loses_the_guard_at_once() {
    let script = Script::new(3_000);
    let server = script.server();
    let client = client_for(&server, |_| {});
    let guard = client.lock("g/refused", &LockOptions::new()).unwrap();
    let signal = guard.lost_signal();
    let waiter = thread::spawn(move || signal.wait());
    script.set(Renew::Refuse);
    assert_eq!(guard.wait_lost(ms(20_000)), Some(LossReason::Refused));
    assert_eq!(waiter.join().unwrap(), Some(LossReason::Refused));
    assert!(guard.is_lost());
    assert_eq!(guard.remaining(), Std::ZERO);
    assert_eq!(guard.release(), Err(LockError::LockNotHeld));
    assert_eq!(script.count(MessageType::Release), 0);
}

/// FORBIDDEN to the renewals (spec §7.1.10 rule 3: the servers' key file no longer lets the
/// key act for the owner): the KEEPALIVE's FORBIDDEN sends the round by RENEW, whose
/// FORBIDDEN loses the guard at once with [`LossReason::Forbidden`] (not retried to its
/// give-up instant, which [`LossReason::Expired`] would say); the waiters wake.
#[test]
fn a_forbidden_renewal_loses_the_guard_at_once() {
    let script = Script::new(3_000);
    let server = script.server();
    let client = client_for(&server, |_| {});
    script.set(Renew::Forbid);
    let guard = client.lock("g/forbidden", &LockOptions::new()).unwrap();
    let signal = guard.lost_signal();
    let waiter = thread::spawn(move || signal.wait());
    assert_eq!(guard.wait_lost(ms(20_000)), Some(LossReason::Forbidden));
    assert_eq!(waiter.join().unwrap(), Some(LossReason::Forbidden));
    assert!(guard.is_lost());
    assert!(
        script.count(MessageType::Keepalive) >= 1,
        "a KEEPALIVE first"
    );
    assert!(
        script.count(MessageType::Renew) >= 1,
        "then a RENEW per hold"
    );
}

/// A renewal naming another fencing token is a loss: the token never changes under a guard.
#[test]
fn a_renewal_with_another_token_loses_the_guard() {
    let script = Script::new(300);
    let server = script.server();
    let client = client_for(&server, |_| {});
    // By RENEW (a KEEPALIVE names the token itself: another one is a clear bit, a refusal).
    script.refuse_keepalives();
    script.set(Renew::Token(6));
    let guard = client.lock("g/token", &LockOptions::new()).unwrap();
    assert_eq!(
        guard.wait_lost(ms(20_000)),
        Some(LossReason::TokenChanged {
            expected: 5,
            got: 6
        })
    );
    assert_eq!(guard.fencing_token(), 5);
}

/// Silence: retried, then given up a margin before the validity ends; the guard says so
/// without the renewer's help too, and the waiter wakes.
#[test]
fn silence_loses_the_guard_before_its_validity_ends() {
    let script = Script::new(300);
    let server = script.server();
    let client = client_for(&server, |_| {});
    script.set(Renew::Silent);
    let guard = client
        .lock("g/silent", &LockOptions::new().loss_margin(ms(100)))
        .unwrap();
    let signal = guard.lost_signal();
    let waiter = thread::spawn(move || signal.wait());
    assert_eq!(guard.wait_lost(ms(20_000)), Some(LossReason::Expired));
    assert_eq!(waiter.join().unwrap(), Some(LossReason::Expired));
    assert!(
        script.renewal_datagrams() >= 2,
        "renewals were retried: {}",
        script.renewal_datagrams()
    );
    // Given up for silence: the server may still hold it, so drop releases it.
    drop(guard);
    assert_eq!(script.count(MessageType::Release), 1);
}

/// Drop releases under the guard's owner; `release` reports the answer; a released guard's
/// signal says "released" (`None`).
#[test]
fn drop_and_release_release_the_lock() {
    let script = Script::new(10_000);
    let server = script.server();
    let client = client_for(&server, |_| {});
    let guard = client.lock("g/drop", &LockOptions::new()).unwrap();
    let owner = guard.owner().to_owned();
    drop(guard);
    assert_eq!(script.clients(MessageType::Release), vec![owner]);
    let guard = client.try_lock("g/drop", &LockOptions::new()).unwrap();
    let signal = guard.lost_signal();
    assert_eq!(guard.release(), Ok(()));
    assert_eq!(signal.wait(), None);
    assert_eq!(script.count(MessageType::Release), 2);
}

/// Default owners are unique per guard (`<session hex>-<n>`), even on one resource.
#[test]
fn default_owners_are_unique() {
    let script = Script::new(10_000);
    let server = script.server();
    let client = client_for(&server, |_| {});
    let a = client.lock("g/owners", &LockOptions::new()).unwrap();
    let b = client.lock("g/owners", &LockOptions::new()).unwrap();
    assert_ne!(a.owner(), b.owner());
    for owner in [a.owner(), b.owner()] {
        let (session, n) = owner.split_once('-').unwrap();
        assert_eq!(session.len(), 16, "{owner}");
        assert!(u64::from_str_radix(session, 16).is_ok(), "{owner}");
        assert!(n.parse::<u64>().is_ok(), "{owner}");
    }
}

/// With an owner prefix (`ClientConfig::owner_prefix`, by default a client key file's first
/// prefix) every generated owner starts with it, and is still unique per guard.
#[test]
fn default_owners_carry_the_owner_prefix() {
    let script = Script::new(10_000);
    let server = script.server();
    let client = client_for(&server, |c| *c = c.clone().with_owner_prefix("team-a/"));
    let a = client.lock("g/prefixed", &LockOptions::new()).unwrap();
    let b = client.lock("g/prefixed", &LockOptions::new()).unwrap();
    assert_ne!(a.owner(), b.owner());
    for owner in [a.owner(), b.owner()] {
        let rest = owner.strip_prefix("team-a/").expect(owner);
        let (session, n) = rest.split_once('-').unwrap();
        assert_eq!(session.len(), 16, "{owner}");
        assert!(n.parse::<u64>().is_ok(), "{owner}");
    }
    let named = client
        .lock("g/prefixed", &LockOptions::new().owner("elsewhere"))
        .unwrap();
    assert_eq!(
        named.owner(),
        "elsewhere",
        "a named owner is taken as it is"
    );
    let acquired = script.clients(MessageType::Acquire);
    assert!(
        acquired[..2].iter().all(|c| c.starts_with("team-a/")),
        "{acquired:?}"
    );
}

/// A named owner: a second guard is refused unless both are re-entrant; refused again when
/// the server's hold count shows the owner held the lock already (and that hold given back).
#[test]
fn named_owners_and_reentry() {
    let script = Script::new(10_000);
    let server = script.server();
    let client = client_for(&server, |_| {});
    let named = LockOptions::new().owner("billing");
    let first = client.lock("g/named", &named).unwrap();
    let err = client.lock("g/named", &named).unwrap_err();
    assert!(
        matches!(&err, LockError::InvalidArgument(m) if m.contains("\"billing\"")),
        "{err}"
    );
    let err = client
        .lock("g/named", &named.clone().reentrant(true))
        .unwrap_err();
    assert!(matches!(err, LockError::InvalidArgument(_)), "{err}");
    assert_eq!(
        script.count(MessageType::Acquire),
        1,
        "refused before sending"
    );
    drop(first);
    let again = client.lock("g/named", &named).unwrap();
    drop(again);
    let reentrant = named.clone().reentrant(true);
    let a = client.lock("g/named", &reentrant).unwrap();
    *script.hold_count.lock().unwrap() = 2;
    let b = client.lock("g/named", &reentrant).unwrap();
    assert_eq!(a.fencing_token(), b.fencing_token());
    drop((a, b));
    // Held elsewhere under the same owner: the extra hold is released, the guard refused.
    let releases = script.count(MessageType::Release);
    let err = client.lock("g/named", &named).unwrap_err();
    assert!(
        matches!(&err, LockError::InvalidArgument(m) if m.contains("in use elsewhere")),
        "{err}"
    );
    assert_eq!(script.count(MessageType::Release), releases + 1);
}

/// Every refused option names its field; nothing is sent.
#[test]
fn options_are_validated() {
    let script = Script::new(10_000);
    let server = script.server();
    let client = client_for(&server, |_| {});
    let refused = |options: LockOptions, field: &str| {
        let err = client.lock("g/options", &options).unwrap_err();
        assert!(
            matches!(&err, LockError::InvalidArgument(m) if m.starts_with(field)),
            "{field}: {err}"
        );
    };
    refused(LockOptions::new().wait(Std::from_secs(301)), "wait");
    refused(LockOptions::new().ttl(Std::from_micros(999)), "ttl");
    refused(LockOptions::new().ttl(Std::from_secs(5_000_000)), "ttl");
    refused(LockOptions::new().owner(""), "owner");
    refused(LockOptions::new().owner("x".repeat(256)), "owner");
    refused(LockOptions::new().reentrant(true), "reentrant");
    refused(
        LockOptions::new().ttl(ms(100)).loss_margin(ms(51)),
        "loss_margin",
    );
    let err = client.lock("", &LockOptions::new()).unwrap_err();
    assert!(matches!(&err, LockError::InvalidArgument(m) if m.starts_with("resource")));
    assert_eq!(script.count(MessageType::Acquire), 0);
}

/// The renewer thread starts with the first guard, outlives the `Client` while a guard
/// lives, and ends once both are gone.
#[test]
fn the_renewer_ends_with_the_client_and_its_guards() {
    let script = Script::new(10_000);
    let server = script.server();
    let client = client_for(&server, |_| {});
    assert!(client.renewer_alive().upgrade().is_none(), "started lazily");
    let guard = client.lock("g/life", &LockOptions::new()).unwrap();
    let alive = client.renewer_alive();
    assert!(alive.upgrade().is_some());
    drop(client);
    assert!(alive.upgrade().is_some(), "the guard keeps it");
    assert!(!guard.is_lost());
    drop(guard);
    let end = BootInstant::now() + StdDuration::from_secs(20);
    while alive.upgrade().is_some() {
        assert!(BootInstant::now() < end, "the renewer thread did not end");
        thread::sleep(StdDuration::from_millis(5));
    }
    assert_eq!(script.count(MessageType::Release), 1);
}

/// The one reading of a KEEPALIVE's answer (both renewers, `renewer::keepalive_outcomes`):
/// a set bit renews its hold with the answer's lease and send time, a clear bit refuses it;
/// silence marks the shard silent; a first INVALID_ARGUMENT turns KEEPALIVE off for good,
/// a first INTERNAL_ERROR only for the round; later in a round they are unanswered holds.
#[test]
fn keepalive_answers_read_into_outcomes() {
    use super::super::keepalive::KeepaliveAnswer;
    use super::super::renewer::{keepalive_outcomes, KeepaliveRead, Tracked};
    use crate::core::renewal::RenewOutcome;
    use std::sync::atomic::Ordering;
    let now = BootInstant::now();
    let hold = |token| Tracked {
        token,
        resource: format!("r{token}"),
        owner: "o".into(),
        ttl_ms: None,
        state: Arc::new(super::super::guard::HoldState::new(now, now)),
    };
    let (a, b, c) = (hold(7), hold(8), hold(9));
    let chunk = [&a, &b, &c];
    let usable = AtomicBool::new(true);
    let sent_at = Instant::from_micros(1_000);
    let answer = Ok(KeepaliveAnswer {
        bitmap: 0b101,
        lease_ms: 300,
        lease_start: sent_at,
    });
    let renewed = |token| RenewOutcome::Renewed {
        sent_at,
        lease_ms: 300,
        token,
    };
    let KeepaliveRead::Outcomes(read, silent) =
        keepalive_outcomes(answer, &chunk, true, 0, &usable, 1)
    else {
        panic!("an answer is read");
    };
    assert_eq!(read, [renewed(7), RenewOutcome::Refused, renewed(9)]);
    assert!(!silent);
    let no_answer = vec![RenewOutcome::NoAnswer; 3];
    match keepalive_outcomes(Err(LockError::Unavailable), &chunk, true, 0, &usable, 1) {
        KeepaliveRead::Outcomes(read, true) => assert_eq!(read, no_answer),
        _ => panic!("silence is unanswered holds and a silent shard"),
    }
    let internal = || Err(LockError::InternalError("old node".into()));
    assert!(matches!(
        keepalive_outcomes(internal(), &chunk, true, 0, &usable, 1),
        KeepaliveRead::Fallback
    ));
    assert!(usable.load(Ordering::Relaxed), "only this round by RENEW");
    match keepalive_outcomes(internal(), &chunk, false, 0, &usable, 1) {
        KeepaliveRead::Outcomes(read, false) => assert_eq!(read, no_answer),
        _ => panic!("after an answered chunk an error is unanswered holds"),
    }
    let invalid = Err(LockError::InvalidArgument("shards".into()));
    assert!(matches!(
        keepalive_outcomes(invalid, &chunk, true, 0, &usable, 1),
        KeepaliveRead::Fallback
    ));
    assert!(!usable.load(Ordering::Relaxed), "RENEW from now on");
    usable.store(true, Ordering::Relaxed);
    let forbidden = || Err(LockError::Forbidden { client_id: None });
    for first in [true, false] {
        assert!(
            matches!(
                keepalive_outcomes(forbidden(), &chunk, first, 0, &usable, 1),
                KeepaliveRead::Fallback
            ),
            "FORBIDDEN names no hold: RENEW tells which"
        );
    }
    assert!(usable.load(Ordering::Relaxed), "only this round by RENEW");
}

/// The one reading of a RENEW's answer (`renewer::renew_outcome`): refusals lose the hold,
/// silence marks the shard silent, other errors are unanswered.
#[test]
fn renew_errors_read_into_outcomes() {
    use super::super::renewer::{renew_outcome, Tracked};
    use crate::core::renewal::RenewOutcome;
    let now = BootInstant::now();
    let hold = Tracked {
        token: 5,
        resource: "r".into(),
        owner: "o".into(),
        ttl_ms: Some(300),
        state: Arc::new(super::super::guard::HoldState::new(now, now)),
    };
    for refusal in [
        LockError::LockNotHeld,
        LockError::ReleaseInDoubt,
        LockError::ResourceDoesNotExist,
    ] {
        assert_eq!(
            renew_outcome(Err(refusal), &hold, 0),
            (RenewOutcome::Refused, false)
        );
    }
    assert_eq!(
        renew_outcome(Err(LockError::Forbidden { client_id: None }), &hold, 0),
        (RenewOutcome::Forbidden, false),
        "final: lost at once, not retried"
    );
    assert_eq!(
        renew_outcome(Err(LockError::Unavailable), &hold, 0),
        (RenewOutcome::NoAnswer, true)
    );
    let overloaded = LockError::Overloaded { retry_after_ms: 5 };
    assert_eq!(
        renew_outcome(Err(overloaded), &hold, 0),
        (RenewOutcome::NoAnswer, false)
    );
}
