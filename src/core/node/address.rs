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
//!
//! The hot path: every mutating request carries its token, so a session's every ACQUIRE and
//! RELEASE would cost an HMAC (about a tenth of a single node's whole request). The node
//! therefore remembers the tokens it verified lately ([`VerifiedTokens`]): a request whose
//! source, session and token are exactly those of one verified under the keys in force is
//! admitted without a second HMAC. That memoizes a pure function, so it admits nothing the
//! HMAC would refuse: a token is valid for one (source, session) under one key, an entry is
//! made only after the HMAC said yes, it matches only the same three values byte for byte,
//! and the memo is emptied whenever a key changes. It is bounded (a fixed table, no
//! allocation after start), and a flood of forged tokens cannot enter it.

use std::net::SocketAddr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use udplock_protocol::address::ADDRESS_TOKEN_INPUT_LEN;
use udplock_protocol::{
    address_token_age, address_token_input, AddressToken, AddressTokenCheck, AddressTokenKey,
    RequestKind, ADDRESS_TOKEN_LEN,
};

use crate::core::peer_auth::KeySet;

/// Bytes of a node's own token secret (used when it has no cluster key).
pub const ADDRESS_SECRET_LEN: usize = 32;

/// Salt of the node secret drawn from the core's seed, so it is not the replicas' stream.
const ADDRESS_SECRET_SEED_SALT: u64 = 0xADD7_E55A_11DA_7E00;

/// Slots of the memo of verified tokens ([`VerifiedTokens`]): the sessions one node serves
/// at once without a second HMAC each. A session whose slot another took pays one HMAC on
/// its next request and takes it back. 1,024 slots of 46 bytes: about 48 KB per node.
pub const VERIFIED_TOKENS_SLOTS: usize = 1_024;

/// Whether the node validates addresses, its own token key, and the tokens it verified.
#[derive(Clone, Debug)]
pub struct AddressValidation {
    on: bool,
    /// The key of this node's tokens when it has no cluster key (spec §7.2.5).
    node_key: AddressTokenKey,
    /// Tokens verified under the keys in force (see the module docs).
    verified: VerifiedTokens,
    /// Tokens checked by HMAC so far (monitoring and tests: what the memo saved).
    macs_checked: u64,
}

impl AddressValidation {
    /// Validation `on` or off, with a node secret drawn from `rng_seed`.
    pub fn new(on: bool, rng_seed: u64) -> AddressValidation {
        let mut rng = ChaCha8Rng::seed_from_u64(rng_seed ^ ADDRESS_SECRET_SEED_SALT);
        let secret: [u8; ADDRESS_SECRET_LEN] = rng.gen();
        AddressValidation {
            on,
            node_key: AddressTokenKey::derive(&secret),
            verified: VerifiedTokens::new(),
            macs_checked: 0,
        }
    }

    /// Replaces the node secret (the shell's, from the operating system): tokens verified
    /// under the old one are no longer remembered.
    pub fn set_secret(&mut self, secret: &[u8; ADDRESS_SECRET_LEN]) {
        self.node_key = AddressTokenKey::derive(secret);
        self.verified.clear();
    }

    /// The node's keys changed ([`super::Node::set_keys`]): a token verified under a key
    /// no longer accepted must be checked again, so none is remembered.
    pub fn keys_changed(&mut self) {
        self.verified.clear();
    }

    /// Tokens checked by HMAC so far (those the memo admitted are not).
    pub fn macs_checked(&self) -> u64 {
        self.macs_checked
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
    /// (`Forged` also for a missing token). `keys` must be the keys of the latest
    /// [`AddressValidation::keys_changed`]. A token the memo holds had its MAC checked: only
    /// its time is checked again.
    pub fn admits(
        &mut self,
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
        let input = address_token_input(source, session_id, token.issued_s());
        if self.verified.contains(&input, token) {
            return address_token_age(token.issued_s(), now_s);
        }
        self.macs_checked += 1;
        let check = self.verify(keys, source, session_id, token, now_s);
        if check == AddressTokenCheck::Valid {
            self.verified.insert(&input, token);
        }
        check
    }

    /// The HMAC check of [`AddressValidation::admits`], then the time rule.
    fn verify(
        &self,
        keys: &KeySet,
        source: SocketAddr,
        session_id: u64,
        token: &AddressToken,
        now_s: u32,
    ) -> AddressTokenCheck {
        let issuing = self.issuing(keys);
        if issuing.verify_mac(source, session_id, token) {
            return address_token_age(token.issued_s(), now_s);
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

/// The tokens a node verified lately, each with the (source, session) it is valid for: a
/// direct-mapped table of [`VERIFIED_TOKENS_SLOTS`] entries (see the module docs for why
/// it admits nothing the HMAC would refuse).
///
/// An entry's slot is chosen by the token's last two bytes, which are HMAC output in every
/// token (spec §7.2.5): uniform, and unknown to anyone who does not hold the token, so no
/// hashing is needed and nobody can aim at another session's slot except with valid tokens
/// of their own (which costs the other session one HMAC, never a wrong answer). A lookup
/// compares all 46 bytes without stopping at the first difference, as the HMAC check
/// compares its tag: its time says nothing of how much of a forged token was right.
#[derive(Clone)]
pub struct VerifiedTokens {
    slots: Vec<Option<Verified>>,
}

/// One verified token and what it was verified for.
#[derive(Clone, Copy)]
struct Verified {
    /// [`address_token_input`] of the source and session.
    input: [u8; ADDRESS_TOKEN_INPUT_LEN],
    token: [u8; ADDRESS_TOKEN_LEN],
}

impl std::fmt::Debug for VerifiedTokens {
    /// Never shows tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.slots.iter().filter(|s| s.is_some()).count();
        write!(f, "VerifiedTokens({used} of {})", self.slots.len())
    }
}

impl VerifiedTokens {
    fn new() -> VerifiedTokens {
        VerifiedTokens {
            slots: vec![None; VERIFIED_TOKENS_SLOTS],
        }
    }

    fn slot(token: &AddressToken) -> usize {
        let tail = u16::from_le_bytes([
            token.0[ADDRESS_TOKEN_LEN - 2],
            token.0[ADDRESS_TOKEN_LEN - 1],
        ]);
        usize::from(tail) % VERIFIED_TOKENS_SLOTS
    }

    /// Whether `token` was verified for `input` (and not forgotten since).
    fn contains(&self, input: &[u8; ADDRESS_TOKEN_INPUT_LEN], token: &AddressToken) -> bool {
        let Some(entry) = &self.slots[Self::slot(token)] else {
            return false;
        };
        let differs = entry
            .input
            .iter()
            .zip(input)
            .chain(entry.token.iter().zip(&token.0))
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(differs) == 0
    }

    /// Remembers that `token` is valid for `input` (the HMAC said so), in place of whatever
    /// its slot held.
    fn insert(&mut self, input: &[u8; ADDRESS_TOKEN_INPUT_LEN], token: &AddressToken) {
        self.slots[Self::slot(token)] = Some(Verified {
            input: *input,
            token: token.0,
        });
        debug_assert!(self.contains(input, token));
    }

    fn clear(&mut self) {
        self.slots.fill(None);
    }
}

#[cfg(test)]
mod tests {
    use udplock_protocol::ClusterKey;

    use super::*;

    const SESSION: u64 = 0xC11E;

    /// The wall clock of these tests (seconds since 1970): every token is made and checked
    /// at it, so none is out of its time window.
    const NOW: u32 = 1_800_000_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn acquire(
        v: &mut AddressValidation,
        keys: &KeySet,
        from: SocketAddr,
        session: u64,
        token: &AddressToken,
    ) -> bool {
        v.admits(keys, RequestKind::Acquire, from, session, Some(token), NOW)
            == AddressTokenCheck::Valid
    }

    /// The hot path: a session's first mutating request costs its token's HMAC, the
    /// following ones none (they are admitted from the memo).
    #[test]
    fn a_sessions_later_requests_are_admitted_without_a_second_hmac() {
        let keys = KeySet::unauthenticated();
        let mut v = AddressValidation::new(true, 5);
        let client = addr("192.0.2.1:4000");
        let token = v.token(&keys, client, SESSION, NOW);
        for _ in 0..32 {
            assert!(acquire(&mut v, &keys, client, SESSION, &token));
        }
        assert_eq!(v.macs_checked(), 1);
        // A forged token is checked (and refused) every time: it never enters the memo.
        let mut forged = token;
        forged.0[0] ^= 1;
        for _ in 0..3 {
            assert!(!acquire(&mut v, &keys, client, SESSION, &forged));
        }
        assert_eq!(v.macs_checked(), 4);
        assert!(acquire(&mut v, &keys, client, SESSION, &token));
        assert_eq!(v.macs_checked(), 4);
    }

    /// A token the memo holds is still checked for its time (spec §7.2.5, expiry): the memo
    /// skips the HMAC, never the window.
    #[test]
    fn a_remembered_token_still_expires() {
        let keys = KeySet::unauthenticated();
        let mut v = AddressValidation::new(true, 5);
        let client = addr("192.0.2.1:4000");
        let token = v.token(&keys, client, SESSION, NOW);
        assert!(acquire(&mut v, &keys, client, SESSION, &token));
        let later = NOW + udplock_protocol::ADDRESS_TOKEN_LIFETIME_S + 1;
        let check = v.admits(
            &keys,
            RequestKind::Acquire,
            client,
            SESSION,
            Some(&token),
            later,
        );
        assert_eq!(check, AddressTokenCheck::Expired);
        assert_eq!(v.macs_checked(), 1, "the memo answered, and still refused");
    }

    /// The memo admits exactly what the HMAC admits: a validation that has remembered a
    /// token answers every neighbouring (source, session, token) as one that remembers
    /// nothing does.
    #[test]
    fn the_memo_admits_nothing_the_hmac_refuses() {
        let keys = KeySet::unauthenticated();
        let mut v = AddressValidation::new(true, 5);
        let client = addr("192.0.2.1:4000");
        let token = v.token(&keys, client, SESSION, NOW);
        assert!(acquire(&mut v, &keys, client, SESSION, &token));
        let mut cases = vec![
            (addr("192.0.2.1:4001"), SESSION, token),
            (addr("192.0.2.2:4000"), SESSION, token),
            (addr("[2001:db8::1]:4000"), SESSION, token),
            (client, SESSION + 1, token),
            (client, SESSION ^ (1 << 63), token),
            // IPv4 and its IPv4-mapped form are one address (spec §7.2.5): both admit.
            (addr("[::ffff:192.0.2.1]:4000"), SESSION, token),
            (client, SESSION, token),
        ];
        for byte in 0..ADDRESS_TOKEN_LEN {
            let mut bad = token;
            bad.0[byte] ^= 0x80;
            cases.push((client, SESSION, bad));
        }
        for (from, session, token) in cases {
            let mut fresh = AddressValidation::new(true, 5);
            let expected = acquire(&mut fresh, &keys, from, session, &token);
            assert_eq!(
                acquire(&mut v, &keys, from, session, &token),
                expected,
                "{from} {session:x} {token:?}"
            );
        }
    }

    /// Spec §8.11.7, §7.2.5: a token verified under a key the node no longer accepts (keys
    /// rotated, or a new node secret) is checked again, and refused.
    #[test]
    fn a_key_change_forgets_every_verified_token() {
        let old = KeySet::single(ClusterKey::new(&[7; 32]));
        let new = KeySet::single(ClusterKey::new(&[8; 32]));
        let client = addr("192.0.2.1:4000");
        let mut v = AddressValidation::new(true, 5);
        let token = v.token(&old, client, SESSION, NOW);
        assert!(acquire(&mut v, &old, client, SESSION, &token));
        v.keys_changed();
        assert!(!acquire(&mut v, &new, client, SESSION, &token));
        // While both are accepted (a rotation), the old key's token is still good.
        let both = KeySet::new(vec![
            Some(ClusterKey::new(&[8; 32])),
            Some(ClusterKey::new(&[7; 32])),
        ])
        .unwrap();
        v.keys_changed();
        assert!(acquire(&mut v, &both, client, SESSION, &token));

        // Without a cluster key: a new node secret.
        let none = KeySet::unauthenticated();
        let mut v = AddressValidation::new(true, 5);
        let token = v.token(&none, client, SESSION, NOW);
        assert!(acquire(&mut v, &none, client, SESSION, &token));
        v.set_secret(&[42; ADDRESS_SECRET_LEN]);
        assert!(!acquire(&mut v, &none, client, SESSION, &token));
    }

    /// The memo is a fixed table: more sessions than slots cost some of them a second HMAC,
    /// never a wrong answer, and it never grows.
    #[test]
    fn more_sessions_than_slots_only_cost_hmacs() {
        let keys = KeySet::unauthenticated();
        let mut v = AddressValidation::new(true, 5);
        let client = addr("192.0.2.1:4000");
        let sessions = 4 * VERIFIED_TOKENS_SLOTS as u64;
        for round in 0..2 {
            for session in 0..sessions {
                let token = v.token(&keys, client, session, NOW);
                assert!(acquire(&mut v, &keys, client, session, &token));
                assert!(!acquire(&mut v, &keys, client, session + sessions, &token));
            }
            assert_eq!(
                v.verified.slots.len(),
                VERIFIED_TOKENS_SLOTS,
                "round {round}"
            );
        }
        // Every first check, every refused one, and the second round's evicted ones.
        let checked = v.macs_checked();
        assert!(checked >= 2 * sessions + sessions + sessions - VERIFIED_TOKENS_SLOTS as u64);
        assert!(checked <= 4 * sessions);
    }
}
