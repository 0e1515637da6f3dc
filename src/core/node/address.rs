//! Address validation (spec §7.2.5, after QUIC's Retry, RFC 9000 §8.1): a request that can
//! create or change session, lock or waiter state is served only if it carries an address
//! token of its source address and session, made at most `ADDRESS_TOKEN_LIFETIME_S` ago by
//! the node's wall clock; otherwise the node answers RETRY with a fresh token and changes
//! nothing. Stateless: a token is its time and an HMAC, checked with one HMAC, so validation
//! keeps nothing per source and a flood of forged sources costs no memory. The wall clock is
//! an argument (seconds since 1970, what the shell last told the core, `Node::set_wall_clock`).
//!
//! Keys: with a cluster key, the token key is derived from it (every node then accepts every
//! node's tokens); without, from a secret of this node (drawn from the core's seed, replaced
//! by the shell with 32 bytes from the operating system: [`super::Node::set_address_secret`]).

use std::net::SocketAddr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use udplock_protocol::{AddressToken, AddressTokenCheck, AddressTokenKey, RequestKind};

use crate::core::peer_auth::KeySet;

/// Bytes of a node's own token secret (used when it has no cluster key).
pub const ADDRESS_SECRET_LEN: usize = 32;

/// Salt of the node secret drawn from the core's seed, so it is not the replicas' stream.
const ADDRESS_SECRET_SEED_SALT: u64 = 0xADD7_E55A_11DA_7E00;

/// Whether the node validates addresses, and its own token key.
#[derive(Clone, Debug)]
pub struct AddressValidation {
    on: bool,
    /// The key of this node's tokens when it has no cluster key (spec §7.2.5).
    node_key: AddressTokenKey,
}

impl AddressValidation {
    /// Validation `on` or off, with a node secret drawn from `rng_seed`.
    pub fn new(on: bool, rng_seed: u64) -> AddressValidation {
        let mut rng = ChaCha8Rng::seed_from_u64(rng_seed ^ ADDRESS_SECRET_SEED_SALT);
        let secret: [u8; ADDRESS_SECRET_LEN] = rng.gen();
        AddressValidation {
            on,
            node_key: AddressTokenKey::derive(&secret),
        }
    }

    /// Replaces the node secret (the shell's, from the operating system).
    pub fn set_secret(&mut self, secret: &[u8; ADDRESS_SECRET_LEN]) {
        self.node_key = AddressTokenKey::derive(secret);
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Spec §7.2.5, "Which requests": every lock request but STATUS can create or change
    /// session, lock or waiter state.
    pub fn needs_token(kind: RequestKind) -> bool {
        kind != RequestKind::Status
    }

    /// The key this node makes tokens with: its cluster key's when it sends with one, its
    /// own otherwise.
    fn issuing<'k>(&'k self, keys: &'k KeySet) -> &'k AddressTokenKey {
        keys.send()
            .map_or(&self.node_key, |key| key.address_token_key())
    }

    /// The token for requests of `session_id` from `source` (what a RETRY carries), made at
    /// wall-clock second `now_s`.
    pub fn token(
        &self,
        keys: &KeySet,
        source: SocketAddr,
        session_id: u64,
        now_s: u32,
    ) -> AddressToken {
        self.issuing(keys).token(source, session_id, now_s)
    }

    /// Whether a request of `kind` from `source` in `session_id`, carrying `token`, may be
    /// served at wall-clock second `now_s`: `Valid` if validation is off, the request needs
    /// no token, or the token is one this node makes (its issuing key first, then every
    /// other key it accepts while keys change, spec §8.11.7; its own key only while it
    /// accepts unauthenticated peers) and its time is within the window; otherwise why not
    /// (`Forged` also for a missing token).
    pub fn admits(
        &self,
        keys: &KeySet,
        kind: RequestKind,
        source: SocketAddr,
        session_id: u64,
        token: Option<&AddressToken>,
        now_s: u32,
    ) -> AddressTokenCheck {
        if !self.on || !Self::needs_token(kind) {
            return AddressTokenCheck::Valid;
        }
        let Some(token) = token else {
            return AddressTokenCheck::Forged;
        };
        let issuing = self.issuing(keys);
        if issuing.verify_mac(source, session_id, token) {
            return udplock_protocol::address_token_age(token.issued_s(), now_s);
        }
        let cluster = keys
            .entries()
            .iter()
            .flatten()
            .skip(usize::from(keys.send().is_some()));
        for key in cluster {
            let check = key
                .address_token_key()
                .check(source, session_id, token, now_s);
            if check != AddressTokenCheck::Forged {
                return check;
            }
        }
        if keys.send().is_some() && keys.accepts_unauthenticated() {
            return self.node_key.check(source, session_id, token, now_s);
        }
        AddressTokenCheck::Forged
    }
}
