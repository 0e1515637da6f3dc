//! Client authentication and authorization at a node (spec §7.2.6): which requests a key
//! file lets through, and which key seals each reply.
//!
//! A lock request goes through three checks, all before any state sees it:
//! 1. [`ClientAuth::verify`], right after decoding (before address validation, so that a
//!    client whose key the node does not know learns it from an UNAUTHENTICATED instead of
//!    an unsealed RETRY it would drop): an AUTH request whose key id the node does not know is
//!    answered UNAUTHENTICATED, unsealed; one whose MAC (or reserved field) does not verify is
//!    dropped. Stateless: one table lookup and one HMAC.
//! 2. [`ClientAuth::authorize`], after address validation and before the session gate:
//!    the key (or the file's `none` line) must authorize the request's client id; CONFIGURE
//!    needs any valid key; STATUS needs none.
//! 3. [`ClientAuth::authorize_tokens`], for KEEPALIVE at the shard's leader: every listed
//!    token at most the last token its table issued (no future hold can be named), and every
//!    live hold named is one of an authorized id. A token's holder never changes, and a token
//!    is issued once, so what the leader checked at admission still holds when the command
//!    applies: no replica checks anything.
//!
//! Sealing: every reply to an AUTH request is sealed with the key it carried. Answers the
//! node sends at once seal with the copy's key. Answers that come later out of a shard (a
//! logged request once committed, a queued ACQUIRE granted) seal with the key of the latest
//! copy of that request this node received ([`ClientAuth::record`], [`ClientAuth::seal_for`]);
//! a node that received none (it became leader after a failover) does not send the answer:
//! the client's next copy gets the remembered answer, sealed. The node-to-node wire does not
//! carry keys.

use std::collections::HashMap;
use std::sync::Arc;

use udplock_protocol::{
    ClientKey, RequestBody, RequestKind, ACQUIRE_WAIT_REQUEST_LEN, AUTH_ACQUIRE_WAIT_REQUEST_LEN,
    CLIENT_AUTH_TRAILER_LEN, REQUEST_LEN_MIN,
};

use crate::client_keys::{Authorization, ClientKeyFile};
use crate::core::lock_table::{LockTable, RequestId};

/// Requests this node remembers the key of while it waits to answer them (a logged request
/// until it commits, a queued ACQUIRE until granted or timed out): beyond this many, an
/// arbitrary one is forgotten, and its answer is not sent; the client's next copy records
/// its key again and gets the remembered answer. 65,536 entries of ~40 bytes: under 3 MiB.
pub const SEALING_PENDING_MAX: usize = 65_536;

/// Why a client request was refused or dropped by client authentication (spec §7.2.6), for
/// the node's counters (`NodeStats::client_auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuthDrop {
    /// No key where the file requires one: answered UNAUTHENTICATED.
    Unauthenticated,
    /// A key id the node does not know (or the node has no key file): answered
    /// UNAUTHENTICATED.
    UnknownKey,
    /// A known key id whose MAC (or reserved field) does not verify: dropped, unanswered.
    BadMac,
    /// A valid key that does not authorize the request: answered FORBIDDEN.
    Forbidden,
}

impl ClientAuthDrop {
    /// Every reason, in counter order.
    pub const ALL: [ClientAuthDrop; 4] = [
        ClientAuthDrop::Unauthenticated,
        ClientAuthDrop::UnknownKey,
        ClientAuthDrop::BadMac,
        ClientAuthDrop::Forbidden,
    ];

    /// Its index in [`ClientAuthDrop::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name the metrics use.
    pub const fn name(self) -> &'static str {
        match self {
            ClientAuthDrop::Unauthenticated => "unauthenticated",
            ClientAuthDrop::UnknownKey => "unknown_key",
            ClientAuthDrop::BadMac => "bad_mac",
            ClientAuthDrop::Forbidden => "forbidden",
        }
    }
}

/// What [`ClientAuth::verify`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verified {
    /// Go on; replies are sealed with this key (`None`: the request carried none).
    Pass(Option<u32>),
    /// Answer UNAUTHENTICATED, unsealed, and stop.
    UnknownKey,
    /// Drop silently.
    BadMac,
}

/// A node's client keys and the keys of the requests it still has to answer.
#[derive(Debug, Default)]
pub struct ClientAuth {
    /// The key file; `None`: the node runs without client authentication (spec §7.2.6: an
    /// AUTH request is then answered UNAUTHENTICATED, everything else as without keys).
    keys: Option<Arc<ClientKeyFile>>,
    /// Request → the key of its latest copy received here (`None`: it carried none). Only
    /// with a key file.
    sealing: HashMap<RequestId, Option<u32>>,
}

impl ClientAuth {
    /// Client authentication with `keys`, or none.
    pub fn new(keys: Option<Arc<ClientKeyFile>>) -> ClientAuth {
        ClientAuth {
            keys,
            sealing: HashMap::new(),
        }
    }

    /// Whether the node has a key file.
    pub fn is_on(&self) -> bool {
        self.keys.is_some()
    }

    /// The key of id `key_id`, if the file lists it.
    pub fn key(&self, key_id: u32) -> Option<&ClientKey> {
        self.keys.as_ref()?.key(key_id)
    }

    /// Step 1: the MAC of an AUTH request (`claimed`: the key id its trailer names).
    pub fn verify(&self, datagram: &[u8], claimed: Option<u32>) -> Verified {
        let Some(id) = claimed else {
            return Verified::Pass(None);
        };
        match self.key(id) {
            None => Verified::UnknownKey,
            Some(key) if key.verify_request(datagram) => Verified::Pass(Some(id)),
            Some(_) => Verified::BadMac,
        }
    }

    /// Step 2: whether a request sealed with `key_id` (verified) may do `body`: ACQUIRE,
    /// RELEASE, RENEW and CANCEL_WAIT for their client id, CONFIGURE with any valid key (or
    /// `none *`), STATUS always; KEEPALIVE needs a key (or a `none` line) here and
    /// [`ClientAuth::authorize_tokens`] at the leader.
    pub fn authorize(&self, key_id: Option<u32>, body: &RequestBody<'_>) -> Authorization {
        let Some(keys) = &self.keys else {
            return Authorization::Allowed;
        };
        match body.kind() {
            RequestKind::Status => Authorization::Allowed,
            RequestKind::Configure => keys.authenticates(key_id),
            RequestKind::Keepalive => match key_id {
                Some(_) => keys.authenticates(key_id),
                // Without a key, only where the `none` line lets something through; each
                // hold is checked at the leader.
                None if keys.has_none_line() => Authorization::Allowed,
                None => Authorization::Unauthenticated,
            },
            RequestKind::Acquire
            | RequestKind::Release
            | RequestKind::Renew
            | RequestKind::CancelWait => {
                let client = body.client().expect("these name a client id");
                keys.authorizes(key_id, client)
            }
        }
    }

    /// Step 3, at a shard's leader: whether a KEEPALIVE sealed with `key_id` may name every
    /// token of `tokens` in `table`, the shard's applied state. `settled`: the leader has
    /// applied every committed command (so a token above the table's last was never
    /// issued, rather than issued by a command this leader has not applied yet); when it is
    /// not, a future token answers `None`: retry later (OVERLOADED), not FORBIDDEN.
    pub fn authorize_tokens(
        &self,
        key_id: Option<u32>,
        tokens: impl Iterator<Item = u64>,
        table: Option<&LockTable>,
        settled: bool,
    ) -> Option<Authorization> {
        let Some(keys) = &self.keys else {
            return Some(Authorization::Allowed);
        };
        let refused = if key_id.is_some() {
            Authorization::Forbidden
        } else {
            Authorization::Unauthenticated
        };
        // Before INIT applies, no token was issued (every token is in the future).
        let last = table.map_or(0, LockTable::token_last);
        for token in tokens {
            if token > last {
                return if settled { Some(refused) } else { None };
            }
            let holder = table.and_then(|t| t.holder_of_token(token));
            if let Some(holder) = holder {
                if keys.authorizes(key_id, holder) != Authorization::Allowed {
                    return Some(refused);
                }
            }
        }
        Some(Authorization::Allowed)
    }

    /// Notes that a copy of request `id` sealed with `key_id` (`None`: unsealed) reached a
    /// shard here: the shard's answers to it are sealed with that key.
    pub fn record(&mut self, id: RequestId, key_id: Option<u32>) {
        if self.keys.is_none() {
            return;
        }
        if self.sealing.len() >= SEALING_PENDING_MAX && !self.sealing.contains_key(&id) {
            let victim = *self.sealing.keys().next().expect("full");
            self.sealing.remove(&victim);
        }
        self.sealing.insert(id, key_id);
        assert!(self.sealing.len() <= SEALING_PENDING_MAX);
    }

    /// Whether a copy of request `id` sealed with `key_id` conflicts with an earlier copy
    /// this node is still to answer: sealed with another key, or one sealed and one not. A
    /// client seals every copy of a request with the same key (spec §7.1.10), so such a copy
    /// is someone else's, using the request's ids to take its answer: refused (spec §7.2.6).
    pub fn conflicts(&self, id: RequestId, key_id: Option<u32>) -> bool {
        self.keys.is_some() && self.sealing.get(&id).is_some_and(|&k| k != key_id)
    }

    /// Forgets request `id`'s key: no shard here will answer it.
    pub fn forget(&mut self, id: RequestId) {
        self.sealing.remove(&id);
    }

    /// How to seal a shard's answer to request `id`: `Some(None)` unsealed, `Some(Some(k))`
    /// with key `k`, `None`: do not send it (a key file, and no copy of the request reached
    /// this node, or its key left the file). `last`: the request's final answer, after which
    /// the node forgets its key (WAITING is not final).
    pub fn seal_for(&mut self, id: RequestId, last: bool) -> Option<Option<&ClientKey>> {
        let keys = match &self.keys {
            None => return Some(None),
            Some(keys) => keys,
        };
        let key_id = if last {
            self.sealing.remove(&id)?
        } else {
            *self.sealing.get(&id)?
        };
        match key_id {
            None => Some(None),
            Some(k) => keys.key(k).map(Some),
        }
    }

    /// Requests whose key is remembered.
    pub fn pending(&self) -> usize {
        self.sealing.len()
    }
}

/// The reply byte budget (`lock_table::Request::datagram_len`, in unsealed bytes) of a
/// request of `datagram_len` bytes whose replies are sealed or not (spec §2.2 rule 7): a sealed
/// reply is [`CLIENT_AUTH_TRAILER_LEN`] bytes longer, so a STATUS names a holder only if
/// `100 + holder_len` fits, and a queued ACQUIRE gets a WAITING at once only if it is at least
/// [`AUTH_ACQUIRE_WAIT_REQUEST_LEN`] bytes long (room for two sealed replies).
pub fn reply_budget(kind: RequestKind, datagram_len: usize, sealed: bool) -> usize {
    if !sealed {
        return datagram_len;
    }
    assert!(datagram_len >= REQUEST_LEN_MIN + CLIENT_AUTH_TRAILER_LEN);
    match kind {
        // An ACQUIRE's replies carry no holder: the budget only decides the WAITING.
        RequestKind::Acquire if datagram_len >= AUTH_ACQUIRE_WAIT_REQUEST_LEN => {
            ACQUIRE_WAIT_REQUEST_LEN
        }
        RequestKind::Acquire => REQUEST_LEN_MIN,
        _ => datagram_len - CLIENT_AUTH_TRAILER_LEN,
    }
}
