//! Settings of cluster nodes (spec §4.8, §5.7, §8.10): what a node tells its peers
//! (PEER_SETTINGS, never answered) and a client that asks (NODE_SETTINGS), so that nodes whose
//! settings differ can say which, instead of dropping each other in silence.
//!
//! ```text
//! settings list         count u16 | (setting u16 | value u64) × count
//! PEER_SETTINGS         header (type 0x41, session_id = cluster id, request_id = from)
//!                       | settings list                                (no padding)
//! NODE_SETTINGS         header (type 0x07) | zero padding
//! NODE_SETTINGS_REPLY   header (type 0x87) | status u16 | node_id u64 | cluster_id u64
//!                       | settings list                                (no padding)
//! ```
//!
//! A setting is a [`Setting`] code and a `u64`: the value itself for a number, an FNV-1a 64
//! digest for the node list. Codes a receiver does not know are carried (the list can grow)
//! and ignored. Nothing here changes any Raft or lock state: a node only compares, logs and
//! reports.

use core::fmt;

use crate::auth::{AuthTrailer, AUTH_TRAILER_LEN};
use crate::be::{u16_at, u64_at};
use crate::header::{self, field as hfield, Direction, Header, HeaderIds};
use crate::peer::{decode_node_datagram, NodeDatagram, PeerHeader, PEER_DATAGRAM_LEN_MAX};
use crate::registry::{Flags, MessageType, Setting, Status};
use crate::{DecodeError, EncodeError, DATAGRAM_LEN_MAX, HEADER_LEN, MAGIC, VERSION};

/// One entry of a settings list: `setting` u16, `value` u64.
pub const SETTING_ENTRY_LEN: usize = 10;
/// The `count` in front of a settings list.
const COUNT_LEN: usize = 2;
/// Fixed part of a NODE_SETTINGS_REPLY body before its list: status, node_id, cluster_id.
pub const NODE_SETTINGS_REPLY_FIXED_LEN: usize = 2 + 8 + 8;
/// Length a client pads NODE_SETTINGS to: the longest datagram, so the reply can list every
/// setting (spec §2.2 rule 4).
pub const NODE_SETTINGS_REQUEST_LEN: usize = DATAGRAM_LEN_MAX;
/// Most entries one settings list carries: what fits a PEER_SETTINGS datagram with its
/// authentication trailer (spec §8.10, §8.11), `(1400 - 32 - 2 - 56) / 10`. A reply to a
/// client carries fewer when its request is shorter.
pub const SETTINGS_ENTRIES_MAX: usize =
    (PEER_DATAGRAM_LEN_MAX - HEADER_LEN - COUNT_LEN - AUTH_TRAILER_LEN) / SETTING_ENTRY_LEN;

const _: () = assert!(SETTINGS_ENTRIES_MAX == 131);
// Every registered setting fits a reply to a full-length request.
const _: () = assert!(
    HEADER_LEN + NODE_SETTINGS_REPLY_FIXED_LEN + COUNT_LEN + Setting::ALL.len() * SETTING_ENTRY_LEN
        <= NODE_SETTINGS_REQUEST_LEN
);
// Even the shortest request a server answers pays for a reply without entries.
const _: () =
    assert!(HEADER_LEN + NODE_SETTINGS_REPLY_FIXED_LEN + COUNT_LEN <= crate::REQUEST_LEN_MIN);

/// One setting as a node states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SettingValue {
    /// A [`Setting`] code; a receiver ignores codes it does not know.
    pub setting: u16,
    /// The value, or for the node list its FNV-1a 64 digest (see [`Setting`]).
    pub value: u64,
}

/// A settings list: still in wire form when decoded (no copy), or the caller's slice when
/// built for encoding. Equal when they list the same entries in the same order.
#[derive(Clone, Copy)]
pub struct SettingValues<'a> {
    repr: Repr<'a>,
}

#[derive(Clone, Copy)]
enum Repr<'a> {
    /// Exactly `len / SETTING_ENTRY_LEN` entries, checked by the decoder.
    Wire(&'a [u8]),
    Values(&'a [SettingValue]),
}

impl<'a> SettingValues<'a> {
    /// Entries to encode.
    pub const fn from_slice(values: &'a [SettingValue]) -> SettingValues<'a> {
        SettingValues {
            repr: Repr::Values(values),
        }
    }

    /// How many entries.
    pub const fn len(&self) -> usize {
        match self.repr {
            Repr::Wire(bytes) => bytes.len() / SETTING_ENTRY_LEN,
            Repr::Values(v) => v.len(),
        }
    }

    /// True if there is no entry.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = SettingValue> + 'a {
        let repr = self.repr;
        (0..self.len()).map(move |i| match repr {
            Repr::Wire(bytes) => SettingValue {
                setting: u16_at(bytes, i * SETTING_ENTRY_LEN),
                value: u64_at(bytes, i * SETTING_ENTRY_LEN + 2),
            },
            Repr::Values(v) => v[i],
        })
    }

    /// The value of `setting`, from its first entry.
    pub fn get(&self, setting: Setting) -> Option<u64> {
        self.iter()
            .find(|v| v.setting == setting.to_wire())
            .map(|v| v.value)
    }

    /// Decodes `count u16 | entries` filling all of `body` (`BadBodyLength` otherwise).
    fn decode(body: &'a [u8]) -> Result<SettingValues<'a>, DecodeError> {
        if body.len() < COUNT_LEN {
            return Err(DecodeError::BadBodyLength);
        }
        let count = usize::from(u16_at(body, 0));
        let entries = &body[COUNT_LEN..];
        if entries.len() != count * SETTING_ENTRY_LEN {
            return Err(DecodeError::BadBodyLength);
        }
        Ok(SettingValues {
            repr: Repr::Wire(entries),
        })
    }

    /// Writes `count u16 | entries` at the start of `out`; returns the bytes written.
    fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let len = COUNT_LEN + self.len() * SETTING_ENTRY_LEN;
        let out = out.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
        out[..COUNT_LEN].copy_from_slice(&(self.len() as u16).to_be_bytes());
        for (i, v) in self.iter().enumerate() {
            let at = COUNT_LEN + i * SETTING_ENTRY_LEN;
            out[at..at + 2].copy_from_slice(&v.setting.to_be_bytes());
            out[at + 2..at + SETTING_ENTRY_LEN].copy_from_slice(&v.value.to_be_bytes());
        }
        Ok(len)
    }
}

impl PartialEq for SettingValues<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for SettingValues<'_> {}

impl fmt::Debug for SettingValues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A PEER_SETTINGS datagram (spec §8.10): a node's settings, for one of its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerSettings<'a> {
    /// The sender's cluster id (header `session_id`) and node id (header `request_id`), as
    /// in PEER; a receiver compares the cluster id too, but does not require it to match.
    pub header: PeerHeader,
    /// Set by [`PeerSettings::decode`] when the AUTH flag is (spec §8.11): the trailer, its
    /// layout checked, its MAC not. [`PeerSettings::encode`] ignores it and writes an
    /// unauthenticated datagram, which [`crate::ClusterKey::seal`] then authenticates.
    pub auth: Option<AuthTrailer>,
    /// The sender's settings, at most [`SETTINGS_ENTRIES_MAX`] (spec §8.10).
    pub values: SettingValues<'a>,
}

impl<'a> PeerSettings<'a> {
    /// Decodes a PEER_SETTINGS datagram (spec §8.10, checks in the spec's order). Never
    /// panics; never allocates.
    pub fn decode(datagram: &'a [u8]) -> Result<PeerSettings<'a>, DecodeError> {
        let NodeDatagram { header, auth, body } =
            decode_node_datagram(datagram, MessageType::PeerSettings)?;
        let values = SettingValues::decode(body)?;
        Ok(PeerSettings {
            header,
            auth,
            values,
        })
    }

    /// Encodes the datagram (unpadded); returns its length. More entries than
    /// [`SETTINGS_ENTRIES_MAX`] are [`EncodeError::TooLong`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        if self.values.len() > SETTINGS_ENTRIES_MAX {
            return Err(EncodeError::TooLong);
        }
        if self.header.cluster_id == 0 || self.header.from == 0 {
            return Err(EncodeError::ZeroId);
        }
        let body = self.values.encode(
            out.get_mut(HEADER_LEN..)
                .ok_or(EncodeError::BufferTooSmall)?,
        )?;
        let h = out
            .get_mut(..HEADER_LEN)
            .ok_or(EncodeError::BufferTooSmall)?;
        h[hfield::MAGIC].copy_from_slice(&MAGIC);
        h[hfield::VERSION] = VERSION;
        h[hfield::MSG_TYPE] = MessageType::PeerSettings.to_wire();
        h[hfield::FLAGS].fill(0);
        h[hfield::BODY_LEN].copy_from_slice(&(body as u16).to_be_bytes());
        h[hfield::SESSION_ID].copy_from_slice(&self.header.cluster_id.to_be_bytes());
        h[hfield::REQUEST_ID].copy_from_slice(&self.header.from.to_be_bytes());
        h[hfield::ATTEMPT.start..hfield::RESERVED.end].fill(0);
        Ok(HEADER_LEN + body)
    }
}

/// A NODE_SETTINGS request (spec §4.8): no body, padded so the reply can be as long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSettingsRequest {
    /// The client's session id; non-zero (spec §3.1, §6.6).
    pub session_id: u64,
    /// The request id; non-zero, the same in every retransmission (spec §3.1).
    pub request_id: u64,
    /// The transmission number: 0 first, one more per retransmission (spec §3.1).
    pub attempt: u16,
}

impl NodeSettingsRequest {
    /// Decodes a NODE_SETTINGS datagram (spec §3.2, §4.8). Never panics; never allocates.
    pub fn decode(datagram: &[u8]) -> Result<NodeSettingsRequest, DecodeError> {
        let header = header::decode_fixed_request(datagram, |t| t == MessageType::NodeSettings, 0)?;
        Ok(NodeSettingsRequest {
            session_id: header.session_id,
            request_id: header.request_id,
            attempt: header.attempt,
        })
    }

    /// Encodes the request padded to [`NODE_SETTINGS_REQUEST_LEN`], as a client sends it.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.encode_padded(out, NODE_SETTINGS_REQUEST_LEN)
    }

    /// Encodes the request, then zero padding up to `len` bytes (at least the header).
    pub fn encode_padded(&self, out: &mut [u8], len: usize) -> Result<usize, EncodeError> {
        let ids = HeaderIds {
            session_id: self.session_id,
            request_id: self.request_id,
            attempt: self.attempt,
        };
        header::encode_fixed_request(out, MessageType::NodeSettings, ids, &[], len)
    }
}

/// A NODE_SETTINGS_REPLY (spec §5.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSettingsReply<'a> {
    /// The request's session id, copied (spec §3.1).
    pub session_id: u64,
    /// The request's request id, copied (spec §3.1).
    pub request_id: u64,
    /// The attempt of the request copy answered, copied (spec §3.1).
    pub attempt: u16,
    /// OK in version 1; another status carries nothing (every other field zero).
    pub status: Status,
    /// The answering node's id (non-zero with OK).
    pub node_id: u64,
    /// Its cluster id (spec §8.1; non-zero with OK).
    pub cluster_id: u64,
    /// Its settings, as many as fit in the request's length.
    pub values: SettingValues<'a>,
}

impl<'a> NodeSettingsReply<'a> {
    /// Entries a reply to a NODE_SETTINGS datagram of `request_len` bytes may carry, so that
    /// the reply is no longer than the request (spec §2.2).
    pub const fn entries_that_fit(request_len: usize) -> usize {
        let room = request_len
            .saturating_sub(HEADER_LEN + NODE_SETTINGS_REPLY_FIXED_LEN + COUNT_LEN)
            / SETTING_ENTRY_LEN;
        if room < SETTINGS_ENTRIES_MAX {
            room
        } else {
            SETTINGS_ENTRIES_MAX
        }
    }

    fn consistent(status: Status, node_id: u64, cluster_id: u64, count: usize) -> bool {
        if status == Status::Ok {
            node_id != 0 && cluster_id != 0
        } else {
            node_id == 0 && cluster_id == 0 && count == 0
        }
    }

    /// Decodes a NODE_SETTINGS_REPLY. Never panics; never allocates.
    pub fn decode(datagram: &'a [u8]) -> Result<NodeSettingsReply<'a>, DecodeError> {
        let header = header::decode(datagram, Direction::Reply, |t| {
            t == MessageType::NodeSettingsReply
        })?;
        let body = &datagram[HEADER_LEN..HEADER_LEN + usize::from(header.body_len)];
        if body.len() < NODE_SETTINGS_REPLY_FIXED_LEN {
            return Err(DecodeError::BadBodyLength);
        }
        let values = SettingValues::decode(&body[NODE_SETTINGS_REPLY_FIXED_LEN..])?;
        let status = Status::from_wire(u16_at(body, 0)).ok_or(DecodeError::UnknownStatus)?;
        let node_id = u64_at(body, 2);
        let cluster_id = u64_at(body, 10);
        if !Self::consistent(status, node_id, cluster_id, values.len()) {
            return Err(DecodeError::BadSettings);
        }
        header::check_padding(datagram, &header)?;
        Ok(NodeSettingsReply {
            session_id: header.session_id,
            request_id: header.request_id,
            attempt: header.attempt,
            status,
            node_id,
            cluster_id,
            values,
        })
    }

    /// Encodes the reply (unpadded); returns its length. The caller keeps it within the
    /// request's length with [`NodeSettingsReply::entries_that_fit`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let count = self.values.len();
        if count > SETTINGS_ENTRIES_MAX {
            return Err(EncodeError::TooLong);
        }
        if !Self::consistent(self.status, self.node_id, self.cluster_id, count) {
            return Err(EncodeError::BadSettings);
        }
        let len =
            HEADER_LEN + NODE_SETTINGS_REPLY_FIXED_LEN + COUNT_LEN + count * SETTING_ENTRY_LEN;
        if len > DATAGRAM_LEN_MAX {
            return Err(EncodeError::TooLong);
        }
        let out = out.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
        header::encode(
            out,
            &Header {
                msg_type: MessageType::NodeSettingsReply,
                flags: Flags::empty(),
                body_len: (len - HEADER_LEN) as u16,
                session_id: self.session_id,
                request_id: self.request_id,
                attempt: self.attempt,
            },
        )?;
        let b = &mut out[HEADER_LEN..];
        b[0..2].copy_from_slice(&self.status.to_wire().to_be_bytes());
        b[2..10].copy_from_slice(&self.node_id.to_be_bytes());
        b[10..18].copy_from_slice(&self.cluster_id.to_be_bytes());
        self.values
            .encode(&mut b[NODE_SETTINGS_REPLY_FIXED_LEN..])?;
        Ok(len)
    }
}
