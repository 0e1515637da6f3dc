//! What SWIM members say to each other, as values, with the size each takes on the wire.
//!
//! The byte layout is not written yet (issue 10's wire step: the messages become record kinds
//! inside the authenticated PEER datagram, spec §8.3/§8.11); [`Message::encoded_len`] is the
//! length of the proposed layout, so the core can keep every message inside
//! [`MESSAGE_LEN_MAX`] today and the codec inherits a size that is already bounded.

use std::net::SocketAddr;

use udplock_protocol::{
    AUTH_TRAILER_LEN, HEADER_LEN, PEER_DATAGRAM_LEN_MAX, PEER_RECORD_HEADER_LEN,
};

use crate::core::raft::NodeId;

/// Longest SWIM message body, in bytes: what is left of a PEER datagram
/// ([`PEER_DATAGRAM_LEN_MAX`], 1,400 bytes, never fragmented) after its header, one record
/// header and the authentication trailer = 1400 − 32 − 6 − 56 = 1306. A SWIM message that is
/// the only record of an authenticated PEER datagram therefore never exceeds 1,400 bytes.
pub const MESSAGE_LEN_MAX: usize =
    PEER_DATAGRAM_LEN_MAX - HEADER_LEN - PEER_RECORD_HEADER_LEN - AUTH_TRAILER_LEN;

/// Encoded size of an address: family u8, 16 address bytes (IPv4 mapped), port u16.
pub const ADDR_LEN: usize = 19;
/// Encoded size of one [`Update`]: member id u64, incarnation u64, state u8, address, and the
/// suspecting member's id u64 (zero unless the state is suspect).
pub const UPDATE_LEN: usize = 8 + 8 + 1 + ADDR_LEN + 8;
/// Fixed part of a PING or ACK: seq u32, target id u64, update count u8.
pub const PING_FIXED_LEN: usize = 4 + 8 + 1;
/// Fixed part of a PING_REQ: seq u32, target id u64, target address, update count u8.
pub const PING_REQ_FIXED_LEN: usize = 4 + 8 + ADDR_LEN + 1;
/// A NACK: seq u32.
pub const NACK_LEN: usize = 4;
/// Fixed part of a PUSH_PULL: flags u8 (bit 0: answer with your own state), count u16.
pub const PUSH_PULL_FIXED_LEN: usize = 1 + 2;
/// Most updates one message can carry after its fixed part (the PING_REQ's is the largest).
pub const UPDATES_PER_MESSAGE_MAX: usize = (MESSAGE_LEN_MAX - PING_REQ_FIXED_LEN) / UPDATE_LEN;
/// Most member records in one PUSH_PULL chunk.
pub const PUSH_PULL_MEMBERS_MAX: usize = (MESSAGE_LEN_MAX - PUSH_PULL_FIXED_LEN) / UPDATE_LEN;

const _: () = assert!(MESSAGE_LEN_MAX == 1306);
const _: () = assert!(UPDATES_PER_MESSAGE_MAX >= 16 && UPDATES_PER_MESSAGE_MAX < 256);
const _: () = assert!(PUSH_PULL_FIXED_LEN + PUSH_PULL_MEMBERS_MAX * UPDATE_LEN <= MESSAGE_LEN_MAX);

/// What a member is, as far as the group knows (SWIM §4.2; `Left` is a graceful leave).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    Alive,
    Suspect,
    /// Confirmed failed (the paper's "Confirm" message).
    Dead,
    /// Left on purpose; never suspected again in this incarnation.
    Left,
}

/// One piece of membership news: the gossip that piggybacks on pings and acks (SWIM §4.1), and
/// one record of a full-state exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub incarnation: u64,
    pub state: State,
    /// Who suspects `id` (a suspicion's independent confirmations count distinct senders,
    /// Lifeguard §IV.B); zero for other states.
    pub from: NodeId,
}

/// A SWIM message. `seq` ties an ack or nack to the probe it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// "Are you alive?" (SWIM §3.1). `target` names who should answer, so a message that
    /// reaches a different member at a reused address is not taken for an answer.
    Ping {
        seq: u32,
        target: NodeId,
        updates: Vec<Update>,
    },
    /// The answer to a PING, sent by its target (for an indirect probe, relayed by the
    /// intermediary to the original prober under the prober's `seq`).
    Ack { seq: u32, updates: Vec<Update> },
    /// "Probe `target` for me" (SWIM §3.1): the receiver pings `target` and relays the ack, or
    /// answers NACK once it gave up.
    PingReq {
        seq: u32,
        target: NodeId,
        target_addr: SocketAddr,
        updates: Vec<Update>,
    },
    /// "I asked and got nothing" (Lifeguard §IV.A): a prober that hears nacks knows the network
    /// to its helpers works, so a failed probe is the target's trouble, not its own.
    Nack { seq: u32 },
    /// One chunk of a full-state exchange (at join and periodically, to heal partitions the
    /// gossip missed). `reply` asks the receiver to answer with its own state.
    PushPull { reply: bool, members: Vec<Update> },
}

impl Message {
    /// Length of the message's body in the proposed layout (module doc), in bytes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Message::Ping { updates, .. } | Message::Ack { updates, .. } => {
                PING_FIXED_LEN + updates.len() * UPDATE_LEN
            }
            Message::PingReq { updates, .. } => PING_REQ_FIXED_LEN + updates.len() * UPDATE_LEN,
            Message::Nack { .. } => NACK_LEN,
            Message::PushPull { members, .. } => PUSH_PULL_FIXED_LEN + members.len() * UPDATE_LEN,
        }
    }

    /// The piggybacked gossip of the message (a PUSH_PULL's records are merged apart).
    pub fn updates(&self) -> &[Update] {
        match self {
            Message::Ping { updates, .. }
            | Message::Ack { updates, .. }
            | Message::PingReq { updates, .. } => updates,
            Message::Nack { .. } | Message::PushPull { .. } => &[],
        }
    }
}
