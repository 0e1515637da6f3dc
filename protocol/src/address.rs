//! Address tokens (spec §7.1.9, §7.2.5): the proof that a request's source receives datagrams
//! at its address, modelled on QUIC's Retry (RFC 9000 §8.1), and that it did so recently.
//!
//! A server answers a mutating request that carries no valid token with RETRY, whose hint
//! (kind 3, spec §5.2) carries a token bound to the request's source address and session id
//! and stamped with the time the server made it; the client sends the request again with the
//! token after its body (flag ADDRESS_TOKEN, spec §3.1). Only a source that received the
//! RETRY can do so: a spoofed source address costs the attacker that address. A token
//! expires ([`ADDRESS_TOKEN_LIFETIME_S`]), so a genuine request captured on the wire and
//! replayed after its session was forgotten finds its token expired (spec §7.2.5, "Expiry").
//!
//! ```text
//! token     = issued u32 | first 12 bytes of HMAC-SHA256(token_key, ip | port | session_id | issued)
//! ip        = the source IP address as 16 bytes (IPv4 as IPv4-mapped IPv6); port u16; session_id u64
//! issued    = the making node's wall clock, in seconds since 1970, modulo 2^32
//! token_key = HMAC-SHA256(cluster key, "udplock v1 address token")   with a cluster key
//!           = HMAC-SHA256(node secret, "udplock v1 address token")   without (random per node)
//! ```
//!
//! The codec ([`AddressToken`]) and the time rule ([`address_token_age`]) need no
//! cryptography; making and checking tokens ([`AddressTokenKey`]) needs the `crypto` feature.

use core::net::{IpAddr, SocketAddr};

/// Bytes of an address token (spec §7.1.9): the 4-byte time it was made and a 12-byte MAC.
pub const ADDRESS_TOKEN_LEN: usize = 16;

/// Bytes of a token's MAC (spec §7.2.5): 96 bits, so that forging one for a source an
/// attacker does not receive at takes 2^95 tries on average — every one a datagram the
/// attacker sends, and each token worth at most [`ADDRESS_TOKEN_LIFETIME_S`].
pub const ADDRESS_TOKEN_MAC_LEN: usize = 12;

/// Bytes of a token's `issued` field (big-endian seconds since 1970, modulo 2^32).
pub const ADDRESS_TOKEN_ISSUED_LEN: usize = 4;

const _: () = assert!(ADDRESS_TOKEN_ISSUED_LEN + ADDRESS_TOKEN_MAC_LEN == ADDRESS_TOKEN_LEN);

/// Seconds a token is valid after the time it names (spec §7.2.5, "Expiry"): a node refuses a
/// token whose `issued` lies more than this before its own wall clock. Four minutes: long
/// enough that a busy session pays its extra round trip rarely (one RETRY per node per four
/// minutes, on its first mutating request after expiry), short enough that
/// lifetime + skew stays below the shortest time a server remembers an idle session (see
/// [`ADDRESS_TOKEN_VALID_S_MAX`]).
pub const ADDRESS_TOKEN_LIFETIME_S: u32 = 240;

/// Seconds the wall clocks of a cluster's nodes may differ by (spec §7.2.5, "Expiry"): a node
/// accepts a token whose `issued` lies up to this far ahead of its own wall clock (another
/// node made it, with a clock ahead of this one). One minute: NTP keeps clocks within
/// milliseconds; this only has to cover a node whose clock is badly off, and its cost is that
/// a token can be valid up to this much longer where clocks differ.
pub const ADDRESS_TOKEN_SKEW_S: u32 = 60;

/// The longest real time a token can be accepted for after it was made, on clocks within
/// [`ADDRESS_TOKEN_SKEW_S`] of each other: its lifetime plus the skew. It MUST stay below the
/// shortest idle time after which a server forgets a session: `session_idle_ms` must exceed
/// [`crate::REQUEST_LIFETIME_MS_MAX`] (spec §6.6, §9), so a request replayed after its
/// session was forgotten was captured, and its token made, longer ago than a token lives.
pub const ADDRESS_TOKEN_VALID_S_MAX: u32 = ADDRESS_TOKEN_LIFETIME_S + ADDRESS_TOKEN_SKEW_S;

// Spec §7.2.5: a token outlives no session it could replay into (with a minute to spare for
// clock rates, spec §6.4, and the time the capture took to replay).
const _: () = assert!(
    (ADDRESS_TOKEN_VALID_S_MAX as u64) * 1_000 + 60_000 <= crate::REQUEST_LIFETIME_MS_MAX as u64
);

/// Derivation label of the address-token key: `token_key = HMAC-SHA256(secret, label)`, where
/// the secret is the cluster key (every node then accepts every node's tokens) or a random
/// secret of the node (spec §7.2.5).
pub const ADDRESS_TOKEN_KEY_LABEL: &[u8] = b"udplock v1 address token";

/// The bytes a token's MAC covers: the source address (IPv4 as IPv4-mapped IPv6), its port,
/// the session id and the token's `issued`, all big-endian (spec §7.2.5).
pub const ADDRESS_TOKEN_INPUT_LEN: usize = 16 + 2 + 8 + ADDRESS_TOKEN_ISSUED_LEN;

/// An address token as a RETRY carries it and a request echoes it (spec §7.1.9). Opaque to
/// a client; checked by a server ([`AddressTokenKey::check`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressToken(pub [u8; ADDRESS_TOKEN_LEN]);

impl AddressToken {
    /// The wall-clock time, in seconds since 1970 modulo 2^32, the node that made the token
    /// says it made it at (its first 4 bytes). Only the MAC makes it trustworthy.
    pub fn issued_s(&self) -> u32 {
        let [a, b, c, d, ..] = self.0;
        u32::from_be_bytes([a, b, c, d])
    }

    /// The token's MAC (its last 12 bytes).
    pub fn mac(&self) -> &[u8] {
        &self.0[ADDRESS_TOKEN_ISSUED_LEN..]
    }
}

impl core::fmt::Debug for AddressToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "AddressToken(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// What a node makes of a token (spec §7.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressTokenCheck {
    /// Its MAC is right and its time within the window: the request may be served.
    Valid,
    /// No key the node accepts made it for this source and session (or it was altered).
    Forged,
    /// Genuine, but made more than [`ADDRESS_TOKEN_LIFETIME_S`] before the node's clock.
    Expired,
    /// Genuine, but made more than [`ADDRESS_TOKEN_SKEW_S`] after the node's clock.
    NotYetValid,
}

/// The time rule of spec §7.2.5: a token made at `issued_s` is, at a node whose wall clock
/// reads `now_s` (both in seconds since 1970 modulo 2^32), valid iff its age
/// `(now_s - issued_s) mod 2^32`, read as a two's-complement `i32` (serial-number arithmetic,
/// RFC 1982 §3.2, so that the rule holds across 2106's wrap), lies in
/// `-ADDRESS_TOKEN_SKEW_S ..= ADDRESS_TOKEN_LIFETIME_S`. Says nothing about the MAC.
pub fn address_token_age(issued_s: u32, now_s: u32) -> AddressTokenCheck {
    // Two's complement reading of the wrapped difference (the cast is the definition).
    let age = now_s.wrapping_sub(issued_s) as i32;
    if age > ADDRESS_TOKEN_LIFETIME_S as i32 {
        AddressTokenCheck::Expired
    } else if age < -(ADDRESS_TOKEN_SKEW_S as i32) {
        AddressTokenCheck::NotYetValid
    } else {
        AddressTokenCheck::Valid
    }
}

/// What a token's MAC covers (spec §7.2.5): the source's IP address as 16 bytes (IPv4
/// IPv4-mapped), its port, the session id, the token's `issued`.
pub fn address_token_input(
    source: SocketAddr,
    session_id: u64,
    issued_s: u32,
) -> [u8; ADDRESS_TOKEN_INPUT_LEN] {
    let ip = match source.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut input = [0u8; ADDRESS_TOKEN_INPUT_LEN];
    input[..16].copy_from_slice(&ip.octets());
    input[16..18].copy_from_slice(&source.port().to_be_bytes());
    input[18..26].copy_from_slice(&session_id.to_be_bytes());
    input[26..].copy_from_slice(&issued_s.to_be_bytes());
    input
}

#[cfg(feature = "crypto")]
pub use self::key::AddressTokenKey;

#[cfg(feature = "crypto")]
mod key {
    use core::net::SocketAddr;

    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::{
        address_token_age, address_token_input, AddressToken, AddressTokenCheck,
        ADDRESS_TOKEN_ISSUED_LEN, ADDRESS_TOKEN_KEY_LABEL, ADDRESS_TOKEN_LEN,
    };

    /// A key that makes and checks address tokens (spec §7.2.5), its HMAC state computed
    /// once. (Cargo feature `crypto`.)
    #[derive(Clone)]
    pub struct AddressTokenKey {
        mac: Hmac<Sha256>,
    }

    impl core::fmt::Debug for AddressTokenKey {
        /// Never shows key material.
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "AddressTokenKey(..)")
        }
    }

    impl AddressTokenKey {
        /// The token key derived from `secret` (a cluster key's 32 bytes, or a node's random
        /// secret): `HMAC-SHA256(secret, "udplock v1 address token")`.
        pub fn derive(secret: &[u8]) -> AddressTokenKey {
            // HMAC accepts keys of any length (RFC 2104 §2), so neither call can fail.
            let mut derive =
                Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
            derive.update(ADDRESS_TOKEN_KEY_LABEL);
            let key: [u8; 32] = derive.finalize().into_bytes().into();
            AddressTokenKey {
                mac: Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length"),
            }
        }

        /// The token for requests of session `session_id` from `source`, made at wall-clock
        /// second `issued_s` (since 1970, modulo 2^32).
        pub fn token(&self, source: SocketAddr, session_id: u64, issued_s: u32) -> AddressToken {
            let mut mac = self.mac.clone();
            mac.update(&address_token_input(source, session_id, issued_s));
            let tag: [u8; 32] = mac.finalize().into_bytes().into();
            let mut token = [0u8; ADDRESS_TOKEN_LEN];
            token[..ADDRESS_TOKEN_ISSUED_LEN].copy_from_slice(&issued_s.to_be_bytes());
            token[ADDRESS_TOKEN_ISSUED_LEN..]
                .copy_from_slice(&tag[..ADDRESS_TOKEN_LEN - ADDRESS_TOKEN_ISSUED_LEN]);
            AddressToken(token)
        }

        /// True if `token`'s MAC is this key's for `source`, `session_id` and the time the
        /// token names, compared in constant time (no timing oracle on how many bytes
        /// matched). Says nothing about the token's age: see [`AddressTokenKey::check`].
        pub fn verify_mac(
            &self,
            source: SocketAddr,
            session_id: u64,
            token: &AddressToken,
        ) -> bool {
            let mut mac = self.mac.clone();
            mac.update(&address_token_input(source, session_id, token.issued_s()));
            mac.verify_truncated_left(token.mac()).is_ok()
        }

        /// What a node whose wall clock reads `now_s` (seconds since 1970, modulo 2^32)
        /// makes of `token` from `source` in `session_id` (spec §7.2.5): the MAC first,
        /// then the time rule ([`address_token_age`]).
        pub fn check(
            &self,
            source: SocketAddr,
            session_id: u64,
            token: &AddressToken,
            now_s: u32,
        ) -> AddressTokenCheck {
            if !self.verify_mac(source, session_id, token) {
                return AddressTokenCheck::Forged;
            }
            address_token_age(token.issued_s(), now_s)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::super::{ADDRESS_TOKEN_LIFETIME_S, ADDRESS_TOKEN_SKEW_S};
        use super::*;

        const NOW: u32 = 1_796_630_400;

        #[test]
        fn a_token_binds_address_port_session_and_time() {
            let key = AddressTokenKey::derive(&[7u8; 32]);
            let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
            let t = key.token(a, 9, NOW);
            assert_eq!(t.issued_s(), NOW);
            let valid = |source: SocketAddr, session, token: &AddressToken| {
                key.check(source, session, token, NOW) == AddressTokenCheck::Valid
            };
            assert!(valid(a, 9, &t));
            assert!(!valid("192.0.2.2:4000".parse().unwrap(), 9, &t));
            assert!(!valid("192.0.2.1:4001".parse().unwrap(), 9, &t));
            assert!(!valid(a, 10, &t));
            let other = AddressTokenKey::derive(&[8u8; 32]);
            assert_eq!(other.check(a, 9, &t, NOW), AddressTokenCheck::Forged);
            // IPv4 and its IPv4-mapped IPv6 form are one address (spec §7.2.5).
            assert!(valid("[::ffff:192.0.2.1]:4000".parse().unwrap(), 9, &t));
            let mut bad = t;
            bad.0[15] ^= 1;
            assert_eq!(key.check(a, 9, &bad, NOW), AddressTokenCheck::Forged);
            // The time is under the MAC: a token moved to a later time is forged, not young.
            let mut later = t;
            later.0[..4].copy_from_slice(&(NOW + 200).to_be_bytes());
            assert_eq!(
                key.check(a, 9, &later, NOW + 300),
                AddressTokenCheck::Forged
            );
            assert_eq!(key.check(a, 9, &t, NOW + 300), AddressTokenCheck::Expired);
        }

        #[test]
        fn a_token_is_valid_from_skew_before_to_lifetime_after_its_time() {
            let key = AddressTokenKey::derive(&[7u8; 32]);
            let a: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
            let t = key.token(a, 9, NOW);
            let at = |now| key.check(a, 9, &t, now);
            assert_eq!(
                at(NOW - ADDRESS_TOKEN_SKEW_S - 1),
                AddressTokenCheck::NotYetValid
            );
            assert_eq!(at(NOW - ADDRESS_TOKEN_SKEW_S), AddressTokenCheck::Valid);
            assert_eq!(at(NOW), AddressTokenCheck::Valid);
            assert_eq!(at(NOW + ADDRESS_TOKEN_LIFETIME_S), AddressTokenCheck::Valid);
            assert_eq!(
                at(NOW + ADDRESS_TOKEN_LIFETIME_S + 1),
                AddressTokenCheck::Expired
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_rule_has_its_edges_where_the_spec_puts_them() {
        use AddressTokenCheck::{Expired, NotYetValid, Valid};
        let (life, skew) = (ADDRESS_TOKEN_LIFETIME_S, ADDRESS_TOKEN_SKEW_S);
        let issued = 1_000_000;
        assert_eq!(address_token_age(issued, issued), Valid);
        assert_eq!(address_token_age(issued, issued + life), Valid);
        assert_eq!(address_token_age(issued, issued + life + 1), Expired);
        assert_eq!(address_token_age(issued, issued - skew), Valid);
        assert_eq!(address_token_age(issued, issued - skew - 1), NotYetValid);
        // Far in either direction: half the u32 circle each way (RFC 1982 §3.2).
        assert_eq!(address_token_age(issued, issued + (1 << 31) - 1), Expired);
        assert_eq!(
            address_token_age(issued, issued.wrapping_add(1 << 31)),
            NotYetValid
        );
        assert_eq!(address_token_age(0, u32::MAX / 2), Expired);
        // Across the wrap of 2106: made a second before it, checked a second after.
        assert_eq!(address_token_age(u32::MAX, 1), Valid);
        assert_eq!(address_token_age(u32::MAX - life, 0), Expired);
        assert_eq!(address_token_age(1, 1u32.wrapping_sub(skew)), Valid);
        assert_eq!(
            address_token_age(1, 1u32.wrapping_sub(skew + 1)),
            NotYetValid
        );
    }

    #[test]
    fn a_token_reads_its_time_from_its_first_four_bytes() {
        let mut bytes = [0xAB; ADDRESS_TOKEN_LEN];
        bytes[..4].copy_from_slice(&0x6A1B_2C3Du32.to_be_bytes());
        let token = AddressToken(bytes);
        assert_eq!(token.issued_s(), 0x6A1B_2C3D);
        assert_eq!(token.mac(), &[0xAB; ADDRESS_TOKEN_MAC_LEN]);
        let input = address_token_input("192.0.2.7:40000".parse().unwrap(), 0x0123, 0x0A0B_0C0D);
        assert_eq!(&input[10..12], &[0xff, 0xff]);
        assert_eq!(&input[16..18], &40000u16.to_be_bytes());
        assert_eq!(&input[26..], &[0x0A, 0x0B, 0x0C, 0x0D]);
    }
}
