//! [`LockError`]: what a lock operation can tell its caller.
//!
//! Every variant says what happened, whether the lock service's state changed, and its
//! `Display` says what to do about it. The mapping from wire status codes is
//! [`LockError::from_status`]; the CLI's exit codes are [`LockError::exit_code`].
//!
//! Two outcomes leave the caller unsure whether the operation took effect
//! ([`LockError::outcome_known`] is false for them):
//! - [`LockError::Unavailable`]: no reply came before the deadline. The request may have been
//!   applied and only the reply lost — an acquire may have been granted; that lock then
//!   expires after its TTL unless released.
//! - [`LockError::OutcomeUnknown`] (status REQUEST_EXPIRED) and a server-reported
//!   [`LockError::InternalError`] (status INTERNAL_ERROR): the server itself cannot say.
//! - [`LockError::ReleaseInDoubt`]: a release got no answer that settles it, and may still
//!   take effect (spec §7.1.5); the client settles it before its next call on the lock.
//!
//! Decision: INTERNAL_ERROR maps to the mission's `InternalError` (it is a server fault that
//! must be reported, and its message says the outcome is unknown); `OutcomeUnknown` is kept
//! for REQUEST_EXPIRED, which is not a fault but a request retransmitted after the server
//! stopped remembering its answer.

use std::fmt;

use udplock_protocol::Status;

/// Why a lock operation failed.
///
/// `#[non_exhaustive]`: a later version may add variants, so a `match` needs a `_` arm (most
/// callers want [`LockError::outcome_known`] there).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockError {
    /// The lock stayed held by another client for the whole wait (or, for a try-acquire, was
    /// held). State: unchanged.
    LockAcquisitionTimeout,
    /// Release or renew by a client that does not hold the lock: another client holds it, or
    /// nobody does (never acquired, already released, or its lease expired; whether the
    /// server still knows the resource makes no difference). State: unchanged.
    LockNotHeld,
    /// Clearing the default TTL of a resource the server does not know (spec §4.6): there
    /// was no configuration to clear, most likely because the resource id is mistyped. The
    /// only request answered so: release and renew without the lock are [`LockNotHeld`], and
    /// status of a lock nobody holds is an answer saying it is free. State: unchanged.
    ///
    /// [`LockNotHeld`]: LockError::LockNotHeld
    ResourceDoesNotExist,
    /// A bug or an unexpected condition, in the server (INTERNAL_ERROR, MALFORMED,
    /// UNSUPPORTED...) or in this client (a socket that cannot be opened). State: unknown
    /// when the server reported INTERNAL_ERROR, otherwise unchanged.
    InternalError(String),
    /// No reply from the lock server before the deadline. State: unknown (see the module
    /// docs).
    Unavailable,
    /// An argument is out of range; says which. State: unchanged (usually refused before
    /// anything was sent).
    InvalidArgument(String),
    /// A server-wide or per-resource limit, or this client's limit on requests in flight, is
    /// reached. State: unchanged. `retry_after_ms` is the server's hint (0: none given).
    Overloaded {
        /// How long the server asks the client to wait before retrying, in milliseconds
        /// (0: no hint).
        retry_after_ms: u32,
    },
    /// A re-entrant acquire would exceed the per-lock hold count limit. State: unchanged.
    HoldLimitExceeded,
    /// The server no longer remembers the answer to this (retransmitted) request, so the
    /// operation may or may not have taken effect (REQUEST_EXPIRED). State: unknown.
    OutcomeUnknown,
    /// A RELEASE of this lock by this client id got no answer that settles it (spec §7.1.5):
    /// the server answered only OVERLOADED or INTERNAL_ERROR, which it does not remember, so a
    /// copy may still take effect later. Returned by that release, and by every later call on
    /// the same lock and client id (acquire, renew, release) until the client has sent the
    /// release again and got an answer; such a call is not sent. State: unknown (the lock may
    /// be freed at any moment: stop relying on it); the call that was not sent changed nothing.
    ReleaseInDoubt,
    /// The servers require a client key for this request and it carried none, or they do
    /// not know the key it carried (status UNAUTHENTICATED, spec §7.1.10): give the client
    /// the key the servers' key file lists (`ClientConfig::with_client_key_file`). Not
    /// retried. State: unchanged (the servers act on no request they cannot authenticate).
    Unauthenticated,
    /// The servers know this client's key, but it does not authorize the request (status
    /// FORBIDDEN, spec §7.1.10): the key's prefixes in the servers' key file do not cover
    /// `client_id` (for a KEEPALIVE, some hold it names is not this key's). Not retried.
    /// State: unchanged.
    Forbidden {
        /// The client id the request acted for, when it named one (not a KEEPALIVE's).
        client_id: Option<String>,
    },
}

impl LockError {
    /// The error a reply status stands for; `None` for OK.
    ///
    /// OVERLOADED comes back with `retry_after_ms: 0`; the client fills in the reply's hint.
    pub fn from_status(status: Status) -> Option<LockError> {
        let error = match status {
            Status::Ok => return None,
            Status::LockAcquisitionTimeout => LockError::LockAcquisitionTimeout,
            Status::LockNotHeld => LockError::LockNotHeld,
            Status::ResourceDoesNotExist => LockError::ResourceDoesNotExist,
            Status::InvalidArgument => LockError::InvalidArgument(
                "the server refused a field as out of range (an empty id, or a wait or TTL \
                 above the server's wait_ms_max / ttl_ms_max)"
                    .to_owned(),
            ),
            Status::Overloaded => LockError::Overloaded { retry_after_ms: 0 },
            Status::HoldLimitExceeded => LockError::HoldLimitExceeded,
            Status::RequestExpired => LockError::OutcomeUnknown,
            Status::Malformed => LockError::InternalError(
                "the server could not decode our request (MALFORMED): the client and server \
                 versions disagree, or one of them has a bug; nothing changed"
                    .to_owned(),
            ),
            Status::UnsupportedVersion => LockError::InternalError(
                "the server does not speak this protocol version (UNSUPPORTED_VERSION): \
                 upgrade the client or the server so they match; nothing changed"
                    .to_owned(),
            ),
            Status::Unsupported => LockError::InternalError(
                "the server does not support this request (UNSUPPORTED): it is older than this \
                 client; upgrade the server; nothing changed"
                    .to_owned(),
            ),
            Status::NotLeader => LockError::InternalError(
                "NOT_LEADER reached the caller as if it were final: the client follows leader \
                 hints itself, so this is a client bug; nothing changed"
                    .to_owned(),
            ),
            // Provisional, handled by the client's wait loop; never a final answer.
            Status::Waiting => LockError::InternalError(
                "the server's WAITING answer reached the caller as if it were final: a client \
                 bug; the acquire may still be granted and then expires after its TTL"
                    .to_owned(),
            ),
            // Not final either (spec §7.1.9): the call core resends with the token.
            Status::Retry => LockError::InternalError(
                "the server's RETRY (address validation) reached the caller as if it were \
                 final: a client bug; nothing changed"
                    .to_owned(),
            ),
            Status::Unauthenticated => LockError::Unauthenticated,
            // The client fills in the client id its request named.
            Status::Forbidden => LockError::Forbidden { client_id: None },
            Status::InternalError => LockError::InternalError(
                "the server reported INTERNAL_ERROR, so the operation may or may not have taken \
                 effect: check the lock's status and report the server's log"
                    .to_owned(),
            ),
        };
        Some(error)
    }

    /// The process exit code the CLI uses for this error: 3 acquisition timeout, 4 not held,
    /// 5 no such resource, 6 unavailable, 7 unauthenticated (no client key, or one the
    /// servers do not know), 8 forbidden (the key does not authorize the client id), 1
    /// anything else (0 is success, never an error).
    pub fn exit_code(&self) -> i32 {
        match self {
            LockError::LockAcquisitionTimeout => 3,
            LockError::LockNotHeld => 4,
            LockError::ResourceDoesNotExist => 5,
            LockError::Unavailable | LockError::ReleaseInDoubt => 6,
            LockError::Unauthenticated => 7,
            LockError::Forbidden { .. } => 8,
            LockError::InternalError(_)
            | LockError::InvalidArgument(_)
            | LockError::Overloaded { .. }
            | LockError::HoldLimitExceeded
            | LockError::OutcomeUnknown => 1,
        }
    }

    /// False when the operation may or may not have taken effect: [`LockError::Unavailable`],
    /// [`LockError::OutcomeUnknown`], [`LockError::ReleaseInDoubt`] and
    /// [`LockError::InternalError`] (conservatively, since a server INTERNAL_ERROR is one).
    /// True when the service's state is known to be unchanged.
    pub fn outcome_known(&self) -> bool {
        !matches!(
            self,
            LockError::Unavailable
                | LockError::OutcomeUnknown
                | LockError::InternalError(_)
                | LockError::ReleaseInDoubt
        )
    }
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::LockAcquisitionTimeout => f.write_str(
                "lock not acquired: another client held it for the whole wait; nothing \
                 changed. Retry, wait longer, or look up who holds it",
            ),
            LockError::LockNotHeld => f.write_str(
                "this client does not hold the lock (never acquired, already released, or its \
                 lease expired); nothing changed. Check the client id, and renew before the TTL \
                 runs out",
            ),
            LockError::ResourceDoesNotExist => f.write_str(
                "the lock server does not know this resource (never acquired or configured, or \
                 forgotten once free), so it has no configuration to clear; nothing changed. \
                 Check the resource id",
            ),
            LockError::InternalError(what) => write!(f, "internal error: {what}"),
            LockError::Unavailable => f.write_str(
                "no answer from the lock server before the deadline: check that a server runs \
                 at the addresses the client was given and that UDP reaches it. The request may \
                 still have taken effect; a lock granted whose reply was lost expires after its \
                 TTL",
            ),
            LockError::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            LockError::Overloaded { retry_after_ms } => write!(
                f,
                "the lock service is at a limit (too many resources, waiters, sessions, or \
                 requests in flight from this client); nothing changed. Retry after {retry_after_ms} ms"
            ),
            LockError::HoldLimitExceeded => f.write_str(
                "re-entrant hold limit reached: this client already holds the lock the maximum \
                 number of times; nothing changed. Release it before acquiring it again",
            ),
            LockError::OutcomeUnknown => f.write_str(
                "the server no longer remembers the answer to this request (REQUEST_EXPIRED), \
                 so it may or may not have taken effect: check the lock's status, and \
                 release the lock if you hold it or let its TTL expire",
            ),
            LockError::ReleaseInDoubt => f.write_str(
                "a release of this lock by this client id got no answer that settles it (the \
                 service was overloaded or failing), so it may still take effect: stop relying \
                 on the lock now. This client sends that release again before its next request \
                 on the lock, and refuses such requests until the release is answered; retry \
                 later",
            ),
            LockError::Unauthenticated => f.write_str(
                "the lock servers require a client key, or do not know this one \
                 (UNAUTHENTICATED); nothing changed. Use a key listed in the servers' client \
                 key file",
            ),
            LockError::Forbidden {
                client_id: Some(id),
            } => write!(
                f,
                "this client key does not authorize client id \"{}\" (FORBIDDEN: the key's \
                 prefixes in the servers' client key file do not cover it); nothing changed",
                id.escape_debug()
            ),
            LockError::Forbidden { client_id: None } => f.write_str(
                "this client key does not authorize the request (FORBIDDEN: it names a hold of \
                 a client id the key's prefixes do not cover); nothing changed",
            ),
        }
    }
}

impl std::error::Error for LockError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_maps() {
        for &status in Status::ALL {
            let error = LockError::from_status(status);
            assert_eq!(error.is_none(), status == Status::Ok, "{status:?}");
            if let Some(error) = error {
                assert!(!error.to_string().is_empty());
            }
        }
        assert_eq!(
            LockError::from_status(Status::LockAcquisitionTimeout),
            Some(LockError::LockAcquisitionTimeout)
        );
        assert_eq!(
            LockError::from_status(Status::RequestExpired),
            Some(LockError::OutcomeUnknown)
        );
        assert_eq!(
            LockError::from_status(Status::Overloaded),
            Some(LockError::Overloaded { retry_after_ms: 0 })
        );
        assert!(matches!(
            LockError::from_status(Status::InternalError),
            Some(LockError::InternalError(_))
        ));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(LockError::LockAcquisitionTimeout.exit_code(), 3);
        assert_eq!(LockError::LockNotHeld.exit_code(), 4);
        assert_eq!(LockError::ResourceDoesNotExist.exit_code(), 5);
        assert_eq!(LockError::Unavailable.exit_code(), 6);
        assert_eq!(LockError::OutcomeUnknown.exit_code(), 1);
        assert_eq!(LockError::InvalidArgument("x".into()).exit_code(), 1);
        assert_eq!(LockError::Unauthenticated.exit_code(), 7);
        assert_eq!(LockError::Forbidden { client_id: None }.exit_code(), 8);
    }

    /// Issue 12 item 2: the two refusals of client authentication say what to do, nothing
    /// changed, and a client id is printed escaped (it may hold control characters).
    #[test]
    fn authentication_refusals() {
        assert!(LockError::Unauthenticated.outcome_known());
        let forbidden = LockError::Forbidden {
            client_id: Some("b/\x1b[31mred".into()),
        };
        assert!(forbidden.outcome_known());
        let text = forbidden.to_string();
        assert!(
            text.contains("does not authorize client id \"b/\\u{1b}[31mred\""),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "{text}");
        assert!(LockError::Unauthenticated
            .to_string()
            .contains("require a client key"));
    }

    /// The library's errors speak to a program, not to a shell user: no command-line flag and
    /// no `udplock` command (the CLI adds its own hints, `cmd::Failure`).
    #[test]
    fn messages_name_no_command_line() {
        let mut errors: Vec<LockError> = Status::ALL
            .iter()
            .filter_map(|&s| LockError::from_status(s))
            .collect();
        errors.extend([
            LockError::Unavailable,
            LockError::ReleaseInDoubt,
            LockError::Overloaded { retry_after_ms: 5 },
        ]);
        for e in errors {
            let text = e.to_string();
            assert!(!text.contains("--"), "{text}");
            assert!(!text.contains("`udplock"), "{text}");
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        assert!(LockError::Unavailable
            .to_string()
            .contains("check that a server runs"));
        assert!(LockError::Overloaded { retry_after_ms: 25 }
            .to_string()
            .contains("25 ms"));
        assert!(!LockError::Unavailable.outcome_known());
        assert!(!LockError::ReleaseInDoubt.outcome_known());
        assert_eq!(LockError::ReleaseInDoubt.exit_code(), 6);
        assert!(LockError::LockNotHeld.outcome_known());
    }
}
