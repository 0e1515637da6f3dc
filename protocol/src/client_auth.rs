//! Client authentication (spec §7.1.10, §7.2.6): the client-auth trailer of lock requests and
//! their replies, and the client keys that make and check its MAC.
//!
//! A client that holds a *client key* sets the AUTH flag (`0x0001`) on its lock requests and
//! ends each datagram with this 24-byte trailer; a server answers it with replies sealed the
//! same way, with the other direction's key:
//!
//! ```text
//! request = header (AUTH set) | body | address token (16, if ADDRESS_TOKEN) | zero padding | trailer
//! reply   = header (AUTH set) | reply body (holder id included) | zero padding, if any | trailer
//! trailer = key_id u32 | reserved u32 (zero) | mac [16]
//!
//! key_id          = big-endian u32 of HMAC-SHA256(K, "udplock v1 client key id")[..4]
//! request_mac_key = HMAC-SHA256(K, "udplock v1 client request mac")
//! reply_mac_key   = HMAC-SHA256(K, "udplock v1 client reply mac")
//! mac             = HMAC-SHA256(direction's mac key, datagram[..len - 16])[..16]
//! ```
//!
//! `body_len` counts the body only. The MAC covers every byte before it, padding and the
//! trailer's `key_id` and `reserved` included, so no byte of a sealed datagram can change
//! without the key. The two directions have two keys, so a request never verifies as a reply
//! nor the reverse (a reflected request is not an answer).
//!
//! The layout ([`ClientAuth`], [`reply_is_sealed`], the constants) needs no cryptography;
//! making and checking MACs ([`ClientKey`]) needs the `crypto` feature.

use crate::be::{u16_at, u32_at};
use crate::header::field as hfield;
use crate::registry::{Flags, MessageType};
use crate::{HEADER_LEN, REPLY_LEN_MIN, REQUEST_LEN_MIN, STATUS_REQUEST_LEN};

/// Bytes of the client-auth trailer at the end of an authenticated request or reply (spec
/// §3.1, §7.1.10): `key_id` u32, `reserved` u32, `mac` 16 bytes.
pub const CLIENT_AUTH_TRAILER_LEN: usize = 24;

/// Bytes of the truncated MAC at the end of the trailer: 128 bits (RFC 4868 §2.6), so a
/// forger's chance per datagram is 2^-128.
pub const CLIENT_AUTH_MAC_LEN: usize = 16;

/// Bytes of a client key: 256 bits, written as 64 hex digits in key files.
pub const CLIENT_KEY_LEN: usize = 32;

/// The shortest authenticated request a server processes (spec §2.2): a sealed reply is
/// [`CLIENT_AUTH_TRAILER_LEN`] bytes longer than a plain one, and a reply is never longer than
/// its request. `REQUEST_LEN_MIN + 24` = 100.
pub const AUTH_REQUEST_LEN_MIN: usize = REQUEST_LEN_MIN + CLIENT_AUTH_TRAILER_LEN;

/// The length an authenticated ACQUIRE that may wait is padded to: two sealed replies (a
/// WAITING at once and the final answer later), `2 * (REPLY_LEN_MIN + 24)` = 200 (spec §2.2).
pub const AUTH_ACQUIRE_WAIT_REQUEST_LEN: usize = 2 * (REPLY_LEN_MIN + CLIENT_AUTH_TRAILER_LEN);

/// The length an authenticated STATUS is padded to, so that its sealed reply can name a holder
/// of the longest id: `STATUS_REQUEST_LEN + 24` = 355 (spec §2.2).
pub const AUTH_STATUS_REQUEST_LEN: usize = STATUS_REQUEST_LEN + CLIENT_AUTH_TRAILER_LEN;

/// Derivation label of the key id: the first 4 bytes, big-endian, of `HMAC-SHA256(K, label)`.
pub const CLIENT_KEY_ID_LABEL: &[u8] = b"udplock v1 client key id";

/// Derivation label of the request MAC key: `HMAC-SHA256(K, label)`.
pub const CLIENT_REQUEST_MAC_LABEL: &[u8] = b"udplock v1 client request mac";

/// Derivation label of the reply MAC key: `HMAC-SHA256(K, label)`. A label of its own, so a
/// request never verifies as a reply.
pub const CLIENT_REPLY_MAC_LABEL: &[u8] = b"udplock v1 client reply mac";

const _: () = assert!(AUTH_REQUEST_LEN_MIN == 100);
const _: () = assert!(AUTH_ACQUIRE_WAIT_REQUEST_LEN == 200);
const _: () = assert!(AUTH_STATUS_REQUEST_LEN == 355);
const _: () = assert!(AUTH_STATUS_REQUEST_LEN <= crate::DATAGRAM_LEN_MAX);

/// Byte ranges of the trailer, counted from its first byte.
pub mod field {
    use core::ops::Range;
    /// `key_id`, u32: which client key made the MAC ([`super::ClientAuth::key_id`]).
    pub const KEY_ID: Range<usize> = 0..4;
    /// Reserved, zero when sent; checked together with the MAC (a non-zero value never
    /// verifies, spec §7.2.6).
    pub const RESERVED: Range<usize> = 4..8;
    /// `mac`: HMAC-SHA256 truncated to 16 bytes, over every byte of the datagram before it.
    pub const MAC: Range<usize> = 8..24;
}

const _: () = assert!(field::MAC.end == CLIENT_AUTH_TRAILER_LEN);
const _: () = assert!(field::MAC.end - field::MAC.start == CLIENT_AUTH_MAC_LEN);

/// What the decoder read from an authenticated request's trailer: the key it claims to be
/// sealed with. Nothing is verified yet: the server looks the key up and checks the MAC with
/// [`ClientKey::verify_request`] (spec §7.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAuth {
    /// The key id the trailer names ([`ClientKey::key_id`]).
    pub key_id: u32,
}

/// The message types that may carry the client-auth trailer (spec §3.1): the seven lock
/// requests and their replies. Not ERROR_REPLY (a server may not know which key to seal with
/// when a datagram does not decode), and not SHARD_STATUS, NODE_SETTINGS, MEMBERS, REMOVE and
/// their replies (unauthenticated reads, or the cluster key's admin MAC).
pub(crate) const fn carries_client_auth(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::Acquire
            | MessageType::Release
            | MessageType::Renew
            | MessageType::Status
            | MessageType::Configure
            | MessageType::Keepalive
            | MessageType::CancelWait
            | MessageType::AcquireReply
            | MessageType::ReleaseReply
            | MessageType::RenewReply
            | MessageType::StatusReply
            | MessageType::ConfigureReply
            | MessageType::KeepaliveReply
            | MessageType::CancelWaitReply
    )
}

/// Bytes of trailer at the end of a client datagram with these flags.
pub(crate) const fn trailer_len(flags: Flags) -> usize {
    if flags.contains(Flags::AUTH) {
        CLIENT_AUTH_TRAILER_LEN
    } else {
        0
    }
}

/// The key id of a reply that says it is sealed: the AUTH flag is set in a reply type that
/// defines it and the datagram is long enough for a header and a trailer. A cheap look that
/// verifies nothing, for a client that must decide whether to check a MAC
/// ([`ClientKey::verify_reply`]) or accept an unsealed reply (spec §7.1.10).
pub fn reply_is_sealed(datagram: &[u8]) -> Option<u32> {
    if datagram.len() < HEADER_LEN + CLIENT_AUTH_TRAILER_LEN {
        return None;
    }
    let t = MessageType::from_wire(datagram[hfield::MSG_TYPE])?;
    let flags = u16_at(datagram, hfield::FLAGS.start);
    if !t.is_reply() || !carries_client_auth(t) || flags & Flags::AUTH.bits() == 0 {
        return None;
    }
    Some(u32_at(
        datagram,
        datagram.len() - CLIENT_AUTH_TRAILER_LEN + field::KEY_ID.start,
    ))
}

/// The key id an authenticated request's trailer names (the caller checked the length).
pub(crate) fn trailer_key_id(datagram: &[u8]) -> u32 {
    u32_at(
        datagram,
        datagram.len() - CLIENT_AUTH_TRAILER_LEN + field::KEY_ID.start,
    )
}

#[cfg(feature = "crypto")]
pub use self::key::ClientKey;
#[cfg(feature = "crypto")]
pub(crate) use self::key::Direction as SealDirection;

#[cfg(feature = "crypto")]
mod key {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::{
        carries_client_auth, field, CLIENT_AUTH_MAC_LEN, CLIENT_AUTH_TRAILER_LEN,
        CLIENT_KEY_ID_LABEL, CLIENT_KEY_LEN, CLIENT_REPLY_MAC_LABEL, CLIENT_REQUEST_MAC_LABEL,
    };
    use crate::be::{u16_at, u32_at};
    use crate::header::field as hfield;
    use crate::registry::{Flags, MessageType};
    use crate::{EncodeError, DATAGRAM_LEN_MAX, HEADER_LEN};

    /// A client key, ready to seal and check requests and replies (spec §7.1.10, §7.2.6):
    /// both directions' HMAC states are computed once, so a datagram costs only its own
    /// bytes. Debug shows the key id, never key material. (Cargo feature `crypto`.)
    #[derive(Clone)]
    pub struct ClientKey {
        request: Hmac<Sha256>,
        reply: Hmac<Sha256>,
        id: u32,
    }

    impl core::fmt::Debug for ClientKey {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "ClientKey({:08x})", self.id)
        }
    }

    fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
        // HMAC accepts keys of any length (RFC 2104 §2), so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Which direction's MAC key: two keys, so a request never verifies as a reply.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Direction {
        Request,
        Reply,
    }

    impl ClientKey {
        /// The key whose 32 secret bytes are `secret`; derives the key id and both MAC keys.
        pub fn new(secret: [u8; CLIENT_KEY_LEN]) -> ClientKey {
            let id = hmac_sha256(&secret, CLIENT_KEY_ID_LABEL);
            let request = hmac_sha256(&secret, CLIENT_REQUEST_MAC_LABEL);
            let reply = hmac_sha256(&secret, CLIENT_REPLY_MAC_LABEL);
            ClientKey {
                request: Hmac::<Sha256>::new_from_slice(&request).expect("any key length"),
                reply: Hmac::<Sha256>::new_from_slice(&reply).expect("any key length"),
                id: u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
            }
        }

        /// The key written as exactly 64 hex digits (either case, nothing else); `None`
        /// otherwise.
        pub fn from_hex(hex: &str) -> Option<ClientKey> {
            let digits = hex.as_bytes();
            if digits.len() != 2 * CLIENT_KEY_LEN {
                return None;
            }
            let nibble = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            };
            let mut secret = [0u8; CLIENT_KEY_LEN];
            for (i, byte) in secret.iter_mut().enumerate() {
                *byte = nibble(digits[2 * i])? << 4 | nibble(digits[2 * i + 1])?;
            }
            Some(ClientKey::new(secret))
        }

        /// The key id trailers made with this key carry: names the key without revealing it.
        pub fn key_id(&self) -> u32 {
            self.id
        }

        fn tag(&self, direction: Direction, data: &[u8]) -> [u8; 32] {
            let mut mac = match direction {
                Direction::Request => self.request.clone(),
                Direction::Reply => self.reply.clone(),
            };
            mac.update(data);
            mac.finalize().into_bytes().into()
        }

        /// Writes the trailer into the last [`CLIENT_AUTH_TRAILER_LEN`] bytes of `datagram`
        /// (whose AUTH flag the caller set): this key's id, zero reserved bytes, and the MAC
        /// of every byte before the MAC.
        pub(crate) fn seal(&self, direction: Direction, datagram: &mut [u8]) {
            debug_assert!(datagram.len() >= HEADER_LEN + CLIENT_AUTH_TRAILER_LEN);
            debug_assert!(u16_at(datagram, hfield::FLAGS.start) & Flags::AUTH.bits() != 0);
            let at = datagram.len() - CLIENT_AUTH_TRAILER_LEN;
            let t = &mut datagram[at..];
            t[field::KEY_ID].copy_from_slice(&self.id.to_be_bytes());
            t[field::RESERVED].fill(0);
            let mac_at = datagram.len() - CLIENT_AUTH_MAC_LEN;
            let tag = self.tag(direction, &datagram[..mac_at]);
            datagram[mac_at..].copy_from_slice(&tag[..CLIENT_AUTH_MAC_LEN]);
        }

        fn verify(&self, direction: Direction, datagram: &[u8]) -> bool {
            if datagram.len() < HEADER_LEN + CLIENT_AUTH_TRAILER_LEN {
                return false;
            }
            let Some(t) = MessageType::from_wire(datagram[hfield::MSG_TYPE]) else {
                return false;
            };
            let right_direction = match direction {
                Direction::Request => t.is_request(),
                Direction::Reply => t.is_reply(),
            };
            let at = datagram.len() - CLIENT_AUTH_TRAILER_LEN;
            if !right_direction
                || !carries_client_auth(t)
                || u16_at(datagram, hfield::FLAGS.start) & Flags::AUTH.bits() == 0
                || u32_at(datagram, at + field::KEY_ID.start) != self.id
                || u32_at(datagram, at + field::RESERVED.start) != 0
            {
                return false;
            }
            let mac_at = datagram.len() - CLIENT_AUTH_MAC_LEN;
            let mut mac = match direction {
                Direction::Request => self.request.clone(),
                Direction::Reply => self.reply.clone(),
            };
            mac.update(&datagram[..mac_at]);
            // Constant time: no timing oracle on how many bytes matched.
            mac.verify_truncated_left(&datagram[mac_at..]).is_ok()
        }

        /// True if `datagram` is a request sealed with this key (spec §7.2.6): a lock request
        /// type with the AUTH flag, this key's id, zero reserved bytes, and the request MAC
        /// of every byte before it. Checks nothing else: decode it first
        /// ([`crate::Request::decode_authenticated`]).
        pub fn verify_request(&self, datagram: &[u8]) -> bool {
            self.verify(Direction::Request, datagram)
        }

        /// Seals in place the unsealed lock reply of `len` bytes at the start of `buf` (as
        /// [`crate::Reply::encode`] wrote it): sets AUTH and writes the trailer after it;
        /// returns the sealed length, `len + 24`. The same bytes as
        /// [`crate::Reply::encode_sealed`], without decoding the reply again (a node seals
        /// the replies its shards produce when it sends them, spec §7.2.6).
        ///
        /// Errors, with `buf` unchanged: `buf[..len]` is not an unsealed reply of a type
        /// that may be sealed with `body_len` the rest of it ([`EncodeError::WrongType`]);
        /// `buf` too short ([`EncodeError::BufferTooSmall`]); the sealed reply longer than
        /// [`crate::DATAGRAM_LEN_MAX`] ([`EncodeError::TooLong`]).
        pub fn seal_reply(&self, buf: &mut [u8], len: usize) -> Result<usize, EncodeError> {
            self.seal_in_place(Direction::Reply, buf, len)
        }

        /// Seals in place the unsealed lock request of `len` bytes at the start of `buf`: sets
        /// AUTH and writes the trailer after it; returns the sealed length, `len + 24`. A
        /// request padded to [`crate::Request::padded_len_auth`] − 24 by
        /// [`crate::Request::encode_padded_with_token`] (or then given a token by
        /// [`crate::with_address_token`]) seals to the bytes [`crate::Request::encode_sealed`]
        /// gives with the same token. A client keeps its request encoded once, unsealed, and
        /// seals each copy with its own attempt number and token: one HMAC per copy sent, no
        /// decoding (spec §7.1.10 rule 1).
        ///
        /// Errors, with `buf` unchanged: `buf[..len]` is not an unsealed request of a type
        /// that may be sealed, or its body runs past `len` ([`EncodeError::WrongType`]);
        /// `buf` too short ([`EncodeError::BufferTooSmall`]); the sealed request longer than
        /// [`crate::DATAGRAM_LEN_MAX`] ([`EncodeError::TooLong`]).
        pub fn seal_request(&self, buf: &mut [u8], len: usize) -> Result<usize, EncodeError> {
            self.seal_in_place(Direction::Request, buf, len)
        }

        /// [`ClientKey::seal_reply`] and [`ClientKey::seal_request`]: a reply ends where its
        /// body ends; a request may be padded (and carry a token) after its body.
        fn seal_in_place(
            &self,
            direction: Direction,
            buf: &mut [u8],
            len: usize,
        ) -> Result<usize, EncodeError> {
            if len < HEADER_LEN || len > buf.len() {
                return Err(EncodeError::BufferTooSmall);
            }
            let sealable = MessageType::from_wire(buf[hfield::MSG_TYPE]).is_some_and(|t| {
                carries_client_auth(t)
                    && match direction {
                        Direction::Reply => t.is_reply(),
                        Direction::Request => t.is_request(),
                    }
            });
            let flags = u16_at(buf, hfield::FLAGS.start);
            let body_end = HEADER_LEN + usize::from(u16_at(buf, hfield::BODY_LEN.start));
            let body_fits = match direction {
                Direction::Reply => body_end == len,
                Direction::Request => body_end <= len,
            };
            if !sealable || flags & Flags::AUTH.bits() != 0 || !body_fits {
                return Err(EncodeError::WrongType);
            }
            let end = len + CLIENT_AUTH_TRAILER_LEN;
            if end > DATAGRAM_LEN_MAX {
                return Err(EncodeError::TooLong);
            }
            if end > buf.len() {
                return Err(EncodeError::BufferTooSmall);
            }
            buf[hfield::FLAGS].copy_from_slice(&(flags | Flags::AUTH.bits()).to_be_bytes());
            self.seal(direction, &mut buf[..end]);
            Ok(end)
        }

        /// True if `datagram` is a reply sealed with this key (spec §7.1.10), as
        /// [`ClientKey::verify_request`] with the reply MAC key.
        pub fn verify_reply(&self, datagram: &[u8]) -> bool {
            self.verify(Direction::Reply, datagram)
        }
    }

    #[cfg(test)]
    mod tests {
        extern crate std;
        use std::format;

        use super::*;
        use crate::{reply_is_sealed, ClientAuth};
        use crate::{
            AddressToken, Reply, Request, RequestBody, Status, AUTH_ACQUIRE_WAIT_REQUEST_LEN,
            AUTH_REQUEST_LEN_MIN, AUTH_STATUS_REQUEST_LEN, DATAGRAM_LEN_MAX,
        };

        fn acquire(wait_ms: u32) -> Request<'static> {
            Request {
                session_id: 7,
                request_id: 9,
                attempt: 1,
                body: RequestBody::Acquire {
                    resource: b"orders/42",
                    client: b"team-a/worker-7",
                    wait_ms,
                    ttl_ms: 10_000,
                },
            }
        }

        /// Sealing an encoded request in place gives the bytes `encode_sealed` gives, with and
        /// without an address token, for the three padded lengths; it refuses a reply, a
        /// sealed request and a non-lock request.
        #[test]
        fn seal_request_in_place_is_encode_sealed() {
            let key = ClientKey::new([5; 32]);
            let token = AddressToken([0x3c; 16]);
            let status = Request {
                body: RequestBody::Status {
                    resource: b"orders/42",
                },
                ..acquire(0)
            };
            for request in [acquire(0), acquire(5_000), status] {
                for token in [None, Some(&token)] {
                    let mut want = [0u8; DATAGRAM_LEN_MAX];
                    let n = request.encode_sealed(&mut want, token, Some(&key)).unwrap();
                    let mut got = [0u8; DATAGRAM_LEN_MAX];
                    let unsealed = request.padded_len_auth() - CLIENT_AUTH_TRAILER_LEN;
                    let m = (request.encode_padded_with_token(&mut got, unsealed, token)).unwrap();
                    assert_eq!(key.seal_request(&mut got, m), Ok(n), "{request:?}");
                    assert_eq!(&got[..n], &want[..n], "{request:?} {token:?}");
                    assert!(key.verify_request(&got[..n]));
                    assert_eq!(
                        key.seal_request(&mut got, n),
                        Err(EncodeError::WrongType),
                        "sealed twice"
                    );
                }
            }
            let reply = Reply::bare(crate::MessageType::AcquireReply, 7, 9, 0, Status::Ok);
            let mut out = [0u8; DATAGRAM_LEN_MAX];
            let n = reply.encode(&mut out).unwrap();
            assert_eq!(key.seal_request(&mut out, n), Err(EncodeError::WrongType));
            let mut short = [0u8; 90];
            let n = acquire(0).encode(&mut short).unwrap();
            assert_eq!(
                key.seal_request(&mut short, n),
                Err(EncodeError::BufferTooSmall)
            );
        }

        #[test]
        fn from_hex_takes_exactly_64_hex_digits() {
            let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";
            let mut secret = [0u8; 32];
            for (i, b) in secret.iter_mut().enumerate() {
                *b = i as u8;
            }
            assert_eq!(
                ClientKey::from_hex(hex).unwrap().key_id(),
                ClientKey::new(secret).key_id()
            );
            assert!(ClientKey::from_hex(&hex[1..]).is_none());
            assert!(ClientKey::from_hex(&format!("{hex}0")).is_none());
            assert!(ClientKey::from_hex(&hex.replace('A', "g")).is_none());
            assert!(ClientKey::from_hex(&format!(" {}", &hex[1..])).is_none());
            // Debug never shows the secret.
            let shown = format!("{:?}", ClientKey::new(secret));
            assert!(!shown.contains("0001020304"), "{shown}");
        }

        #[test]
        fn a_sealed_request_verifies_with_its_key_only_and_not_as_a_reply() {
            let key = ClientKey::new([1; 32]);
            let other = ClientKey::new([2; 32]);
            let token = AddressToken([0xAB; 16]);
            let mut out = [0u8; DATAGRAM_LEN_MAX];
            let n = acquire(0)
                .encode_sealed(&mut out, Some(&token), Some(&key))
                .unwrap();
            // Body 10 + 9 + 15, the token and the trailer pass the 100-byte floor.
            assert_eq!(n, 32 + 34 + 16 + 24);
            assert!(n > AUTH_REQUEST_LEN_MIN);
            let d = &out[..n];
            assert!(key.verify_request(d));
            assert!(!other.verify_request(d));
            assert!(!key.verify_reply(d));
            let (req, tok, auth) = Request::decode_authenticated(d).unwrap();
            assert_eq!(req, acquire(0));
            assert_eq!(tok, Some(token));
            assert_eq!(
                auth,
                Some(ClientAuth {
                    key_id: key.key_id()
                })
            );
            // Every byte counts: flipping any bit fails the MAC (or the key id check).
            for i in 0..n {
                let mut bad = out;
                bad[i] ^= 0x01;
                assert!(!key.verify_request(&bad[..n]), "byte {i}");
            }
            // The plain decoders keep refusing AUTH (spec §3.2 step 6).
            assert_eq!(
                Request::decode(d).unwrap_err(),
                crate::DecodeError::AuthUnsupported
            );
            // Without a key: today's bytes exactly.
            let mut plain = [0u8; DATAGRAM_LEN_MAX];
            let m = acquire(0)
                .encode_with_token(&mut plain, Some(&token))
                .unwrap();
            let mut none = [0u8; DATAGRAM_LEN_MAX];
            let k = acquire(0)
                .encode_sealed(&mut none, Some(&token), None)
                .unwrap();
            assert_eq!(&none[..k], &plain[..m]);
            assert_eq!(Request::decode_authenticated(&plain[..m]).unwrap().2, None);
        }

        #[test]
        fn padded_lengths_pay_for_sealed_replies() {
            assert_eq!(acquire(0).padded_len_auth(), AUTH_REQUEST_LEN_MIN);
            assert_eq!(acquire(5).padded_len_auth(), AUTH_ACQUIRE_WAIT_REQUEST_LEN);
            let status = Request {
                body: RequestBody::Status {
                    resource: b"orders/42",
                },
                ..acquire(0)
            };
            assert_eq!(status.padded_len_auth(), AUTH_STATUS_REQUEST_LEN);
            // The longest holder fits in a sealed STATUS_REPLY within the padded STATUS.
            let mut reply = Reply::bare(MessageType::StatusReply, 7, 9, 1, Status::Ok);
            let holder = [b'h'; 255];
            reply.holder = &holder;
            let mut out = [0u8; DATAGRAM_LEN_MAX];
            let n = reply.encode_sealed(&mut out, Some(&ClientKey::new([1; 32])));
            assert_eq!(n.unwrap(), AUTH_STATUS_REQUEST_LEN);
        }

        #[test]
        fn a_short_authenticated_request_is_a_decode_error() {
            let key = ClientKey::new([1; 32]);
            let mut out = [0u8; DATAGRAM_LEN_MAX];
            let n = acquire(0)
                .encode_sealed(&mut out, None, Some(&key))
                .unwrap();
            // Cut the padding by one byte and move the trailer: 99 bytes.
            let mut short = [0u8; 99];
            short[..75].copy_from_slice(&out[..75]);
            short[75..].copy_from_slice(&out[n - 24..n]);
            assert_eq!(
                Request::decode_authenticated(&short).unwrap_err(),
                crate::DecodeError::ShortAuthenticated
            );
        }

        #[test]
        fn a_sealed_reply_decodes_and_verifies_with_the_reply_key() {
            let key = ClientKey::new([1; 32]);
            let mut reply = Reply::bare(MessageType::AcquireReply, 7, 9, 1, Status::Ok);
            reply.hold_count = 1;
            reply.fencing_token = 42;
            reply.lease_ms = 10_000;
            let mut out = [0u8; DATAGRAM_LEN_MAX];
            let n = reply.encode_sealed(&mut out, Some(&key)).unwrap();
            assert_eq!(n, 100);
            let d = &out[..n];
            assert_eq!(reply_is_sealed(d), Some(key.key_id()));
            assert!(key.verify_reply(d));
            assert!(!key.verify_request(d));
            assert!(!ClientKey::new([2; 32]).verify_reply(d));
            let decoded = Reply::decode(d).unwrap();
            assert_eq!(decoded.flags, Flags::AUTH);
            assert_eq!(
                Reply {
                    flags: Flags::empty(),
                    ..decoded
                },
                reply
            );
            // Sealing the plain bytes in place gives the same datagram.
            let mut again = [0u8; DATAGRAM_LEN_MAX];
            let m = reply.encode(&mut again).unwrap();
            assert_eq!(key.seal_reply(&mut again, m), Ok(n));
            assert_eq!(&again[..n], d);
            assert_eq!(
                key.seal_reply(&mut again, n),
                Err(crate::EncodeError::WrongType),
                "sealed once"
            );
            reply.encode(&mut again).unwrap();
            assert_eq!(
                key.seal_reply(&mut again[..m + 23], m),
                Err(crate::EncodeError::BufferTooSmall)
            );
            // An unsealed reply says so.
            let m = reply.encode(&mut out).unwrap();
            assert_eq!(reply_is_sealed(&out[..m]), None);
            assert!(!key.verify_reply(&out[..m]));
            // ERROR_REPLY is never sealed.
            let err = Reply::bare(MessageType::ErrorReply, 7, 9, 1, Status::Malformed);
            assert!(err.encode_sealed(&mut out, Some(&key)).is_err());
        }
    }
}
