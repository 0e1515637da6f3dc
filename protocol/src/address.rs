//! Address tokens (spec §7.1.9, §7.2.5): the proof that a request's source receives datagrams
//! at its address, modelled on QUIC's Retry (RFC 9000 §8.1).
//!
//! A server answers a mutating request that carries no valid token with RETRY, whose hint
//! (kind 3, spec §5.2) carries a token bound to the request's source address and session id;
//! the client sends the request again with the token after its body (flag ADDRESS_TOKEN,
//! spec §3.1). Only a source that received the RETRY can do so: a spoofed source address
//! costs the attacker that address.
//!
//! ```text
//! token = first 16 bytes of HMAC-SHA256(token_key, ip (16 bytes, IPv4 mapped) | port u16 | session_id u64)
//! token_key = HMAC-SHA256(cluster key, "udplock v1 address token")   with a cluster key
//!           = HMAC-SHA256(node secret, "udplock v1 address token")   without (random per node)
//! ```
//!
//! The codec ([`AddressToken`]) needs no cryptography; making and checking tokens
//! ([`AddressTokenKey`]) needs the `crypto` feature.

use core::net::{IpAddr, SocketAddr};

/// Bytes of an address token (spec §7.1.9): 128 bits, so that guessing one for a source an
/// attacker does not receive at takes 2^127 tries on average.
pub const ADDRESS_TOKEN_LEN: usize = 16;

/// Derivation label of the address-token key: `token_key = HMAC-SHA256(secret, label)`, where
/// the secret is the cluster key (every node then accepts every node's tokens) or a random
/// secret of the node (spec §7.2.5).
pub const ADDRESS_TOKEN_KEY_LABEL: &[u8] = b"udplock v1 address token";

/// The bytes a token is the MAC of: the source address (IPv4 as IPv4-mapped IPv6), its port
/// and the session id, all big-endian (spec §7.2.5).
pub const ADDRESS_TOKEN_INPUT_LEN: usize = 16 + 2 + 8;

/// An address token as a RETRY carries it and a request echoes it (spec §7.1.9). Opaque to
/// a client; compared by a server in constant time ([`AddressTokenKey::verify`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressToken(pub [u8; ADDRESS_TOKEN_LEN]);

impl core::fmt::Debug for AddressToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "AddressToken(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// What a token is the MAC of (spec §7.2.5): the source's IP address as 16 bytes (IPv4
/// IPv4-mapped), its port, the session id.
pub fn address_token_input(source: SocketAddr, session_id: u64) -> [u8; ADDRESS_TOKEN_INPUT_LEN] {
    let ip = match source.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut input = [0u8; ADDRESS_TOKEN_INPUT_LEN];
    input[..16].copy_from_slice(&ip.octets());
    input[16..18].copy_from_slice(&source.port().to_be_bytes());
    input[18..].copy_from_slice(&session_id.to_be_bytes());
    input
}

#[cfg(feature = "crypto")]
pub use self::key::AddressTokenKey;

#[cfg(feature = "crypto")]
mod key {
    use core::net::SocketAddr;

    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::{address_token_input, AddressToken, ADDRESS_TOKEN_KEY_LABEL, ADDRESS_TOKEN_LEN};

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

        /// The token for requests of session `session_id` from `source`.
        pub fn token(&self, source: SocketAddr, session_id: u64) -> AddressToken {
            let mut mac = self.mac.clone();
            mac.update(&address_token_input(source, session_id));
            let tag: [u8; 32] = mac.finalize().into_bytes().into();
            let mut token = [0u8; ADDRESS_TOKEN_LEN];
            token.copy_from_slice(&tag[..ADDRESS_TOKEN_LEN]);
            AddressToken(token)
        }

        /// True if `token` is this key's token for `source` and `session_id`, compared in
        /// constant time (no timing oracle on how many bytes matched).
        pub fn verify(&self, source: SocketAddr, session_id: u64, token: &AddressToken) -> bool {
            let mut mac = self.mac.clone();
            mac.update(&address_token_input(source, session_id));
            mac.verify_truncated_left(&token.0).is_ok()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_token_binds_address_port_and_session() {
            let key = AddressTokenKey::derive(&[7u8; 32]);
            let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
            let t = key.token(a, 9);
            assert!(key.verify(a, 9, &t));
            assert!(!key.verify("192.0.2.2:4000".parse().unwrap(), 9, &t));
            assert!(!key.verify("192.0.2.1:4001".parse().unwrap(), 9, &t));
            assert!(!key.verify(a, 10, &t));
            assert!(!AddressTokenKey::derive(&[8u8; 32]).verify(a, 9, &t));
            // IPv4 and its IPv4-mapped IPv6 form are one address (spec §7.2.5).
            assert!(key.verify("[::ffff:192.0.2.1]:4000".parse().unwrap(), 9, &t));
            let mut bad = t;
            bad.0[15] ^= 1;
            assert!(!key.verify(a, 9, &bad));
        }
    }
}
