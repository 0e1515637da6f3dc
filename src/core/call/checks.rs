//! What a client checks in a reply before it believes it (spec §7.1.4 rules 5 and 6): that it
//! comes from a node of the cluster, and that its fields do not contradict the request it
//! answers (issue 12 item 5).
//!
//! A reply that names the right session id, request id and attempt may still be forged by
//! someone who read them off the network (the ids travel in clear), or be broken by a faulty
//! server. A forged grant with token 0, hold count 0 and a lease of 2^32 − 1 ms after asking
//! for 10 s would otherwise let the client believe in a hold for 49 days; a forged NOT_LEADER
//! or WAITING would send its copies elsewhere or stretch its deadline. So such a reply is not
//! an answer: the call drops it and goes on waiting for the genuine one, which a forger on
//! the path cannot stop from arriving (a forged datagram never ends a call).
//!
//! What is checked per reply type, with status OK (every other status but WAITING carries
//! zeros the client ignores, spec §5.1):
//!
//! | Reply | Checked |
//! |---|---|
//! | ACQUIRE_REPLY | token ≠ 0; hold count ≥ 1; lease ≤ the TTL asked if the hold is new (count 1) and a TTL was asked, else ≤ the larger of the TTL asked and the client's `lease_ms_max` |
//! | RENEW_REPLY | token ≠ 0; hold count ≥ 1; lease ≤ the larger of the TTL asked and `lease_ms_max` |
//! | KEEPALIVE_REPLY | no bit of the renewed bitmap at or above the number of tokens listed; hold count = bits set; lease 0 if no bit is set, else ≤ the larger of the TTL asked and `lease_ms_max` |
//! | RELEASE_REPLY | token ≠ 0 (the released hold's) |
//! | STATUS_REPLY | a held lock (count ≥ 1) has a token ≠ 0; a free one (count 0) has token, lease, waiters and holder all zero or empty |
//! | WAITING | only in an ACQUIRE_REPLY, to an ACQUIRE that may wait (`wait_ms` > 0); hold count and token 0; lease ≤ the bound of a new hold |
//!
//! Why these bounds: a new hold's lease is its TTL exactly (spec §6.4), so one above the TTL
//! asked is never genuine. A re-entry or renewal may carry more than the TTL asked (an
//! earlier reply promised the hold more, §4.2, §4.4), but never more than the server's
//! `ttl_ms_max`, which the client does not know on its hot path: `lease_ms_max` (a client
//! setting, by default the spec's default `ttl_ms_max`, 1 hour) stands for it. The hold
//! count of a re-entry is not bounded above by anything the client knows (late copies may
//! have added phantom holds, §7.1.5), so only 0 is refused. RELEASE_REPLY's remaining count
//! and lease, and CONFIGURE_REPLY's fields are not checked: believing them wrongly cannot make a client
//! rely on a hold it does not have.

use udplock_protocol::{reply_is_sealed, ClientKey};
use udplock_protocol::{MessageType, Reply, Status};

use super::CallRequest;

/// The default of the client's `lease_ms_max`: the spec's default `ttl_ms_max` (1 hour, spec
/// §9). A client of servers configured with a longer `ttl_ms_max` raises it to theirs.
pub const LEASE_MS_MAX_DEFAULT: u32 = 3_600_000;

/// Why a reply that names the call's ids was still not believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Its source address is not a node the client knows (spec §7.1.4 rule 5).
    NotFromANode,
    /// Its fields contradict the request (spec §7.1.4 rule 6): what is wrong.
    Contradicts(&'static str),
    /// It is not sealed as the request requires (spec §7.1.10): what is wrong.
    Seal(&'static str),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::NotFromANode => f.write_str("from an address that is not a known node"),
            Rejected::Contradicts(what) => write!(f, "contradicts the request: {what}"),
            Rejected::Seal(what) => write!(f, "not sealed as the request requires: {what}"),
        }
    }
}

/// The contradiction between `reply` (which names `request`'s ids and reply type) and
/// `request`, if any (see the module docs for the table).
pub fn contradiction(request: &CallRequest, reply: &Reply<'_>) -> Option<&'static str> {
    // The longest lease a re-entry or renewal may carry.
    let any_lease_max = request.ttl_ms.max(request.lease_ms_max);
    // The lease of a new hold: its TTL, the one asked or (0) a default the client does not know.
    let new_lease_max = if request.ttl_ms != 0 {
        request.ttl_ms
    } else {
        request.lease_ms_max
    };
    if reply.msg_type == MessageType::ErrorReply {
        // ERROR_REPLY answers a request that could not be read (spec §5.4): never a grant
        // in waiting (OK on it the client reports as a server bug).
        return (reply.status == Status::Waiting).then_some("an ERROR_REPLY that says WAITING");
    }
    match (reply.status, request.msg_type) {
        (Status::Waiting, MessageType::Acquire) if request.wait_ms > 0 => {
            if reply.hold_count != 0 || reply.fencing_token != 0 {
                Some("a WAITING with a hold count or token")
            } else if reply.lease_ms > new_lease_max {
                Some("a WAITING whose lease is above the TTL asked")
            } else {
                None
            }
        }
        (Status::Waiting, _) => Some("a WAITING to a request that cannot wait"),
        (Status::Ok, MessageType::Acquire) => {
            if reply.fencing_token == 0 {
                Some("a grant with token 0")
            } else if reply.hold_count == 0 {
                Some("a grant with hold count 0")
            } else if reply.hold_count == 1 && reply.lease_ms > new_lease_max {
                Some("a new hold whose lease is above the TTL asked")
            } else if reply.lease_ms > any_lease_max {
                Some("a re-entry whose lease is above lease_ms_max")
            } else {
                None
            }
        }
        (Status::Ok, MessageType::Renew) => {
            if reply.fencing_token == 0 {
                Some("a renewal with token 0")
            } else if reply.hold_count == 0 {
                Some("a renewal with hold count 0")
            } else if reply.lease_ms > any_lease_max {
                Some("a renewal whose lease is above lease_ms_max")
            } else {
                None
            }
        }
        (Status::Ok, MessageType::Keepalive) => {
            let bitmap = reply.fencing_token;
            let listed = u32::from(request.tokens).min(64);
            if listed < 64 && bitmap >> listed != 0 {
                Some("a renewed bitmap with a bit beyond the tokens listed")
            } else if reply.hold_count != bitmap.count_ones() {
                Some("a hold count that is not the number of bits set")
            } else if bitmap == 0 && reply.lease_ms != 0 {
                Some("a lease when nothing was renewed")
            } else if reply.lease_ms > any_lease_max {
                Some("a renewal whose lease is above lease_ms_max")
            } else {
                None
            }
        }
        (Status::Ok, MessageType::Release) => {
            if reply.fencing_token == 0 {
                Some("a release with token 0")
            } else {
                None
            }
        }
        (Status::Ok, MessageType::Status) => {
            let free = reply.hold_count == 0;
            if free
                && (reply.fencing_token != 0
                    || reply.lease_ms != 0
                    || reply.waiter_count != 0
                    || !reply.holder.is_empty())
            {
                Some("a free lock with a token, lease, waiters or holder")
            } else if !free && reply.fencing_token == 0 {
                Some("a held lock with token 0")
            } else {
                None
            }
        }
        _ => None,
    }
}

/// What a client's key makes of a reply's client-auth trailer (spec §7.1.10). The shell,
/// which holds the datagram, reads it ([`seal_of`]); the call judges it against its request
/// ([`seal_mismatch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seal {
    /// No AUTH flag: the reply carries no trailer.
    Unsealed,
    /// AUTH, and the trailer's MAC verifies with the reply MAC key of the client's key.
    Verified,
    /// AUTH, but not verified by the client's key: another key's id, a MAC or reserved
    /// bytes that do not verify, or a client that holds no key to check it with.
    Unverified,
}

/// The seal of the reply `datagram` under the client's `key` (`None`: a client without a
/// key, which verifies nothing). Costs one HMAC for a sealed reply that names the key's id,
/// nothing otherwise.
pub fn seal_of(key: Option<&ClientKey>, datagram: &[u8]) -> Seal {
    match (reply_is_sealed(datagram), key) {
        (None, _) => Seal::Unsealed,
        (Some(key_id), Some(key)) if key_id == key.key_id() && key.verify_reply(datagram) => {
            Seal::Verified
        }
        (Some(_), _) => Seal::Unverified,
    }
}

/// Why a reply with this `seal` is no answer to `request` (spec §7.1.10 rule 2), if it is
/// not. A sealed request is answered only by replies its key sealed, with two exceptions
/// that come unsealed: UNAUTHENTICATED (the server knows no key to seal with: it does not
/// know this one, or has no key file) and ERROR_REPLY (never sealed: a request the server
/// could not decode, or a server older than client keys), and only with a final status (an
/// unsealed NOT_LEADER, OVERLOADED, RETRY or WAITING is a forgery). Forging one takes the
/// session and request ids, which anyone on the path has, so the call still decides whether
/// such a refusal may end it (only an ACQUIRE not told WAITING, or a STATUS:
/// `Call::ends_on_unsealed`); it never settles a RELEASE. A request without a key is
/// answered only by unsealed replies: a sealed one contradicts it.
pub fn seal_mismatch(request: &CallRequest, reply: &Reply<'_>, seal: Seal) -> Option<&'static str> {
    let not_final = matches!(
        reply.status,
        Status::NotLeader | Status::Overloaded | Status::Retry | Status::Waiting
    );
    let unsealed_answer = !not_final
        && (reply.status == Status::Unauthenticated || reply.msg_type == MessageType::ErrorReply);
    match (request.sealed, seal) {
        (true, Seal::Verified) | (false, Seal::Unsealed) => None,
        (true, Seal::Unsealed) if unsealed_answer => None,
        (true, Seal::Unsealed) => Some("an unsealed reply to a sealed request"),
        (true, Seal::Unverified) => Some("a reply sealed with another key, or a bad MAC"),
        (false, _) => Some("a sealed reply to a request without a key"),
    }
}
