//! Replicated log commands (spec §8.7): the data of one Raft log entry of a shard.
//!
//! Every replica applies the committed commands of a shard in log order to its copy of the
//! shard's lock table, so everything that decides an outcome travels in the command: the
//! request itself, who to answer (`reply_to`), and the *log time* at which it takes effect
//! (`stamp`). An entry with empty data is the no-op a new leader appends (Raft §8); it is not
//! a command and [`LogCommand::decode`] refuses it.
//!
//! ```text
//! INIT     kind=1 | token_first u64
//! TICK     kind=2 | stamp u64
//! REQUEST  kind=3 | stamp u64 | session_id u64 | request_id u64 | attempt u16 | flags u8
//!          | addr [16] | port u16 | op u8 | wait_ms u32 | ttl_ms u32
//!          | resource_len u8 | resource | client_len u8 | client
//!          (op KEEPALIVE: wait_ms carries shard u16 | shards u16, and tokens u64 × count
//!          follow ttl_ms)
//!          [| target_session u64 | target_request u64]   (op CANCEL_WAIT only)
//! SETTINGS kind=4 | ttl_default_ms u32 | retry_after_ms u32 | startup_grace_ms u32
//! CONFIG   kind=5 | voter_count u8 | learner_count u8 | voters (node u64, replica u64)
//!          × voter_count | learners (node u64, replica u64) × learner_count
//! ```
//!
//! SETTINGS carries the values of the settings a leader applies with that may differ between
//! nodes (spec §8.8): every replica applies the commands after it with the same values, so
//! nodes need not share them and an operator can change them with a rolling restart.
//!
//! CONFIG is the shard's Raft configuration (spec §8.7, thesis §4.1): who votes and who only
//! learns, each member named by its node id and its *replica id* (spec §8.5, "Replica
//! identities"): a replica that lost its state comes back with a new one, so it is a new
//! server to every configuration. Raft itself writes and reads it (`core::raft::membership`); a replica's lock table
//! skips it.

use core::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::be::{u16_at, u32_at, u64_at};
use crate::registry::{LogCommandKind, MessageType};
use crate::request::{RequestBody, RequestKind, Tokens, KEEPALIVE_TOKENS_MAX};
use crate::{DecodeError, EncodeError, ID_LEN_MAX};

/// Length of INIT and TICK: the kind byte and one u64.
const SHORT_COMMAND_LEN: usize = 9;
/// Length of SETTINGS: the kind byte and three u32.
const SETTINGS_COMMAND_LEN: usize = 13;
/// Length of CONFIG without its members: the kind byte and the two counts.
const CONFIG_FIXED_LEN: usize = 3;
/// Length of one member of a CONFIG: its node id and its replica id.
pub const CONFIG_MEMBER_LEN: usize = 16;
/// Most members (voters and learners together) one CONFIG names: a shard has 1, 3 or 5
/// voters (typically 3) and, while a replica moves, one learner more; 16 leaves room for 7
/// voters with learners, and bounds what a CONFIG costs to read, to store (259 bytes) and,
/// on a leader, in per-follower state. More does not decode (`BadMembers`).
pub const CONFIG_MEMBERS_MAX: usize = 16;
/// Length of a REQUEST command without its two ids (the two length bytes included).
pub const LOG_REQUEST_FIXED_LEN: usize = 57;
/// Length of the target a REQUEST of op CANCEL_WAIT carries after its client id: the
/// session id and the request id of the ACQUIRE it withdraws (spec §8.7).
pub const LOG_REQUEST_TARGET_LEN: usize = 16;
/// Longest log command: a CANCEL_WAIT REQUEST with a 255-byte resource id and a 255-byte
/// client id. A KEEPALIVE with [`KEEPALIVE_TOKENS_MAX`] tokens is 16 bytes shorter.
pub const LOG_COMMAND_LEN_MAX: usize =
    LOG_REQUEST_FIXED_LEN + 2 * ID_LEN_MAX + LOG_REQUEST_TARGET_LEN;
/// Length of a REQUEST command of op KEEPALIVE without its tokens: the fields up to
/// `ttl_ms` (spec §8.7); the tokens take the place of the ids and their lengths.
pub const LOG_KEEPALIVE_FIXED_LEN: usize = field::RESOURCE_LEN;

/// REQUEST flag: the client's datagram was long enough to pay for a WAITING and a final
/// answer (spec §2.2), so the leader may answer WAITING when the command queues the request.
const FLAG_ROOM_FOR_WAITING: u8 = 0x01;

/// Byte offsets inside a command, from its first (kind) byte.
pub mod field {
    use core::ops::Range;
    /// `kind`, u8, the command kind ([`crate::LogCommandKind`], spec §8.7, §10.5).
    pub const KIND: usize = 0;
    /// INIT: `token_first`; TICK and REQUEST: `stamp`, log time in µs (spec §8.7).
    pub const VALUE: Range<usize> = 1..9;
    /// REQUEST: `session_id`, u64 (spec §8.7).
    pub const SESSION_ID: Range<usize> = 9..17;
    /// REQUEST: `request_id`, u64 (spec §8.7).
    pub const REQUEST_ID: Range<usize> = 17..25;
    /// REQUEST: `attempt`, u16, of the logged copy; the reply echoes it (spec §8.7).
    pub const ATTEMPT: Range<usize> = 25..27;
    /// REQUEST: `flags`, u8; bit 0x01 `room_for_waiting` (spec §8.7).
    pub const FLAGS: usize = 27;
    /// REQUEST: `addr`, the reply address as IPv6, IPv4 mapped (spec §8.7).
    pub const ADDR: Range<usize> = 28..44;
    /// REQUEST: `port`, u16, the reply port (spec §8.7).
    pub const PORT: Range<usize> = 44..46;
    /// REQUEST: `op`, u8, the request's message type; never STATUS (spec §8.7).
    pub const OP: usize = 46;
    /// REQUEST: `wait_ms`, u32; KEEPALIVE: `shard` u16 then `shards` u16 (spec §8.7).
    pub const WAIT_MS: Range<usize> = 47..51;
    /// REQUEST: `ttl_ms`, u32; CONFIGURE: its `default_ttl_ms` (spec §8.7).
    pub const TTL_MS: Range<usize> = 51..55;
    /// REQUEST: `resource_len`, u8; KEEPALIVE: where its tokens start (spec §8.7).
    pub const RESOURCE_LEN: usize = 55;
    /// REQUEST: the resource id, then `client_len` u8 and the client id (spec §8.7).
    pub const RESOURCE: usize = 56;
    /// SETTINGS: `ttl_default_ms`, u32 (spec §8.7).
    pub const TTL_DEFAULT_MS: Range<usize> = 1..5;
    /// SETTINGS: `retry_after_ms`, u32 (spec §8.7).
    pub const RETRY_AFTER_MS: Range<usize> = 5..9;
    /// SETTINGS: `startup_grace_ms`, u32 (spec §8.7).
    pub const STARTUP_GRACE_MS: Range<usize> = 9..13;
    /// CONFIG: `voter_count`, u8, at least 1 (spec §8.7).
    pub const VOTER_COUNT: usize = 1;
    /// CONFIG: `learner_count`, u8 (spec §8.7).
    pub const LEARNER_COUNT: usize = 2;
    /// CONFIG: the members, voters then learners, 16 bytes each (spec §8.7).
    pub const MEMBERS: usize = 3;
}

const _: () = assert!(field::RESOURCE + 1 == LOG_REQUEST_FIXED_LEN);
const _: () = assert!(field::VALUE.end == SHORT_COMMAND_LEN);
const _: () = assert!(LOG_COMMAND_LEN_MAX == 583);
// The most tokens a KEEPALIVE lists fit a log command (spec §4.11, §8.7).
const _: () = assert!(LOG_KEEPALIVE_FIXED_LEN + 8 * KEEPALIVE_TOKENS_MAX <= LOG_COMMAND_LEN_MAX);
const _: () = assert!(field::STARTUP_GRACE_MS.end == SETTINGS_COMMAND_LEN);
const _: () = assert!(field::MEMBERS == CONFIG_FIXED_LEN);
const _: () =
    assert!(CONFIG_FIXED_LEN + CONFIG_MEMBER_LEN * CONFIG_MEMBERS_MAX <= LOG_COMMAND_LEN_MAX);

/// One member of a CONFIG: a replica, named by the node that holds it and the replica id it
/// drew when it started without state (spec §8.5, "Replica identities"). A voter's replica
/// id is never 0; a learner's may be 0, "not known yet".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaRef {
    /// The node that holds the replica; never 0 (spec §8.1).
    pub node: u64,
    /// The replica id the replica drew when it started without state; 0 for a learner whose
    /// id the leader does not know yet (spec §8.5, "Replica identities").
    pub replica: u64,
}

/// Members as a CONFIG holds them: per member its node id then its replica id, big-endian
/// u64s, borrowed from the entry's data (or from a caller's buffer, [`Replicas::write`]).
/// Compared by their bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Replicas<'a>(&'a [u8]);

impl<'a> Replicas<'a> {
    /// Writes `members` into `buf` as a CONFIG holds them; `None` if `buf` is too small.
    pub fn write(members: &[ReplicaRef], buf: &'a mut [u8]) -> Option<Replicas<'a>> {
        let out = buf.get_mut(..members.len().checked_mul(CONFIG_MEMBER_LEN)?)?;
        for (chunk, member) in out.chunks_exact_mut(CONFIG_MEMBER_LEN).zip(members) {
            chunk[..8].copy_from_slice(&member.node.to_be_bytes());
            chunk[8..].copy_from_slice(&member.replica.to_be_bytes());
        }
        Some(Replicas(out))
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.0.len() / CONFIG_MEMBER_LEN
    }

    /// True if there is no member (a CONFIG may have no learner).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The members in order.
    pub fn iter(&self) -> impl Iterator<Item = ReplicaRef> + 'a {
        self.0.chunks_exact(CONFIG_MEMBER_LEN).map(|c| ReplicaRef {
            node: u64_at(c, 0),
            replica: u64_at(c, 8),
        })
    }
}

/// One replicated log command. Ids borrow from the entry's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogCommand<'a> {
    /// The first command of a shard's log: tokens of this shard start at `token_first`.
    Init {
        /// The first fencing token the shard's lock table hands out (spec §8.7, §6.2).
        token_first: u64,
    },
    /// Log time has reached `stamp` (µs): fire every timer due at or before it.
    Tick {
        /// Log time in microseconds up to which every timer fires (spec §8.8).
        stamp: u64,
    },
    /// A client request, applied as of log time `stamp` (µs), answered to `reply_to` by the
    /// leader. `body` is the request's own operation, never a STATUS (a read, answered by
    /// the leader from its applied state, spec §8.9): [`LogCommand::encode`] refuses one, and
    /// the op byte of one does not decode.
    ///
    /// `reply_to` travels as 16 address bytes and a port: an IPv6 address loses its flow
    /// info and scope id, and an IPv4-mapped address comes back as IPv4.
    Request {
        /// Log time in microseconds at which the request takes effect (spec §8.8): every
        /// replica computes leases and timers from it, never from its own clock.
        stamp: u64,
        /// The request's session id; non-zero (spec §4.1, §6.6).
        session_id: u64,
        /// The request's request id; non-zero (spec §4.1, §6.6).
        request_id: u64,
        /// The attempt of the copy that was logged; the reply echoes it (spec §7.1.3).
        attempt: u16,
        /// The logged copy was at least [`ACQUIRE_WAIT_REQUEST_LEN`] bytes long, so it may
        /// be answered WAITING and later finally (spec §2.2). The only thing about the
        /// copy's length that the answers depend on, so the only thing kept.
        ///
        /// [`ACQUIRE_WAIT_REQUEST_LEN`]: crate::ACQUIRE_WAIT_REQUEST_LEN
        room_for_waiting: bool,
        /// The source address of the logged copy, where the leader sends the answer.
        reply_to: SocketAddr,
        /// The request's operation and arguments, unchanged; never STATUS.
        body: RequestBody<'a>,
    },
    /// The values the proposing leader applies with, for the settings that may differ
    /// between nodes: every command after it (until the next SETTINGS) applies with them on
    /// every replica (spec §8.8). Checked when applied, not here: a replica skips one whose
    /// `ttl_default_ms` is 0 or above its `ttl_ms_max`, or whose `retry_after_ms` is 0.
    Settings {
        /// The TTL in milliseconds of an ACQUIRE with `ttl_ms` 0 on a resource with no
        /// configured default (spec §6.4).
        ttl_default_ms: u32,
        /// The retry-after hint in milliseconds of the lock table's OVERLOADED answers
        /// (spec §9).
        retry_after_ms: u32,
        /// The startup grace in milliseconds, from log time 0 (spec §7.2.4, §8.8).
        startup_grace_ms: u32,
    },
    /// The shard's Raft configuration from this entry on (thesis §4.1): the voters (at
    /// least one) and the learners, which receive the log but never vote nor count towards a
    /// majority (thesis §4.2.1). Node ids are non-zero, none named twice, at most
    /// [`CONFIG_MEMBERS_MAX`] in all; a voter's replica id is non-zero (a learner's may be
    /// 0: not known yet); [`LogCommand::decode`] and [`LogCommand::encode`] refuse others.
    Config {
        /// The replicas that vote and whose majority commits; at least one.
        voters: Replicas<'a>,
        /// The replicas that receive the log but never vote nor count towards a majority;
        /// possibly none.
        learners: Replicas<'a>,
    },
}

impl<'a> LogCommand<'a> {
    /// The command's kind (its first byte).
    pub const fn kind(&self) -> LogCommandKind {
        match self {
            LogCommand::Init { .. } => LogCommandKind::Init,
            LogCommand::Tick { .. } => LogCommandKind::Tick,
            LogCommand::Request { .. } => LogCommandKind::Request,
            LogCommand::Settings { .. } => LogCommandKind::Settings,
            LogCommand::Config { .. } => LogCommandKind::Config,
        }
    }

    /// Decodes a log entry's data (spec §8.7, checks in the spec's order). Never panics;
    /// never allocates. Empty data (the leader's no-op) is `TooShort`.
    pub fn decode(data: &'a [u8]) -> Result<LogCommand<'a>, DecodeError> {
        let kind = match data.first() {
            None => return Err(DecodeError::TooShort),
            Some(&k) => LogCommandKind::from_wire(k).ok_or(DecodeError::UnknownCommand)?,
        };
        let value = u64_at(data, field::VALUE.start);
        match kind {
            LogCommandKind::Init | LogCommandKind::Tick => {
                if data.len() != SHORT_COMMAND_LEN {
                    return Err(DecodeError::BadBodyLength);
                }
                Ok(if kind == LogCommandKind::Init {
                    LogCommand::Init { token_first: value }
                } else {
                    LogCommand::Tick { stamp: value }
                })
            }
            LogCommandKind::Request => Self::decode_request(data, value),
            LogCommandKind::Settings => {
                if data.len() != SETTINGS_COMMAND_LEN {
                    return Err(DecodeError::BadBodyLength);
                }
                Ok(LogCommand::Settings {
                    ttl_default_ms: u32_at(data, field::TTL_DEFAULT_MS.start),
                    retry_after_ms: u32_at(data, field::RETRY_AFTER_MS.start),
                    startup_grace_ms: u32_at(data, field::STARTUP_GRACE_MS.start),
                })
            }
            LogCommandKind::Config => Self::decode_config(data),
        }
    }

    fn decode_config(data: &'a [u8]) -> Result<LogCommand<'a>, DecodeError> {
        let (Some(&voters), Some(&learners)) =
            (data.get(field::VOTER_COUNT), data.get(field::LEARNER_COUNT))
        else {
            return Err(DecodeError::BadBodyLength);
        };
        let (voters, learners) = (voters as usize, learners as usize);
        if data.len() != CONFIG_FIXED_LEN + CONFIG_MEMBER_LEN * (voters + learners) {
            return Err(DecodeError::BadBodyLength);
        }
        let split = field::MEMBERS + CONFIG_MEMBER_LEN * voters;
        let voters = Replicas(&data[field::MEMBERS..split]);
        let learners = Replicas(&data[split..]);
        if !config_members_ok(voters, learners) {
            return Err(DecodeError::BadMembers);
        }
        Ok(LogCommand::Config { voters, learners })
    }

    fn decode_request(data: &'a [u8], stamp: u64) -> Result<LogCommand<'a>, DecodeError> {
        // Lengths first (step 4 of spec §8.7): a KEEPALIVE's tokens, or the ids.
        let keepalive = data.get(field::OP) == Some(&MessageType::Keepalive.to_wire());
        let ids = if keepalive {
            Self::keepalive_tokens(data)?;
            None
        } else {
            Some(Self::request_ids(data)?)
        };
        let session_id = u64_at(data, field::SESSION_ID.start);
        let request_id = u64_at(data, field::REQUEST_ID.start);
        if session_id == 0 || request_id == 0 {
            return Err(DecodeError::ZeroId);
        }
        let flags = data[field::FLAGS];
        if flags & !FLAG_ROOM_FOR_WAITING != 0 {
            return Err(DecodeError::UnknownFlags);
        }
        let (wait_ms, ttl_ms) = (
            u32_at(data, field::WAIT_MS.start),
            u32_at(data, field::TTL_MS.start),
        );
        let body = match ids {
            None => RequestBody::Keepalive {
                shard: (wait_ms >> 16) as u16,
                shards: wait_ms as u16,
                ttl_ms,
                tokens: Self::keepalive_tokens(data)?,
            },
            Some((resource, client, target)) => {
                decode_body(data[field::OP], wait_ms, ttl_ms, resource, client, target)?
            }
        };
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&data[field::ADDR]);
        let v6 = Ipv6Addr::from(octets);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        };
        Ok(LogCommand::Request {
            stamp,
            session_id,
            request_id,
            attempt: u16_at(data, field::ATTEMPT.start),
            room_for_waiting: flags & FLAG_ROOM_FOR_WAITING != 0,
            reply_to: SocketAddr::new(ip, u16_at(data, field::PORT.start)),
            body,
        })
    }

    /// The tokens of a REQUEST of op KEEPALIVE (spec §8.7): the length is the fixed part and
    /// 1 to [`KEEPALIVE_TOKENS_MAX`] whole tokens (`BadBodyLength`).
    fn keepalive_tokens(data: &'a [u8]) -> Result<Tokens<'a>, DecodeError> {
        let tokens_len = data
            .len()
            .checked_sub(LOG_KEEPALIVE_FIXED_LEN)
            .ok_or(DecodeError::BadBodyLength)?;
        if tokens_len == 0 || tokens_len / 8 > KEEPALIVE_TOKENS_MAX {
            return Err(DecodeError::BadBodyLength);
        }
        Tokens::from_bytes(&data[LOG_KEEPALIVE_FIXED_LEN..]).ok_or(DecodeError::BadBodyLength)
    }

    /// The ids of a REQUEST of any other op, and CANCEL_WAIT's target (zeros for the other
    /// ops), lengths first: the resource length, then the client length that follows the
    /// resource, then the exact total.
    #[allow(clippy::type_complexity)]
    fn request_ids(data: &'a [u8]) -> Result<(&'a [u8], &'a [u8], (u64, u64)), DecodeError> {
        let rlen = match data.get(field::RESOURCE_LEN) {
            None => return Err(DecodeError::BadBodyLength),
            Some(0) => return Err(DecodeError::EmptyId),
            Some(&n) => n as usize,
        };
        let clen = *data
            .get(field::RESOURCE + rlen)
            .ok_or(DecodeError::BadBodyLength)? as usize;
        // The op is inside the fixed part, which the resource length byte follows.
        let target_len = target_len(data[field::OP]);
        if data.len() != LOG_REQUEST_FIXED_LEN + rlen + clen + target_len {
            return Err(DecodeError::BadBodyLength);
        }
        let resource = &data[field::RESOURCE..field::RESOURCE + rlen];
        let client_at = field::RESOURCE + rlen + 1;
        let client = &data[client_at..client_at + clen];
        let target = if target_len == 0 {
            (0, 0)
        } else {
            let at = client_at + clen;
            (u64_at(data, at), u64_at(data, at + 8))
        };
        Ok((resource, client, target))
    }

    /// Bytes [`LogCommand::encode`] writes (for a command it accepts).
    pub fn encoded_len(&self) -> usize {
        match self {
            LogCommand::Init { .. } | LogCommand::Tick { .. } => SHORT_COMMAND_LEN,
            LogCommand::Settings { .. } => SETTINGS_COMMAND_LEN,
            LogCommand::Config { voters, learners } => {
                CONFIG_FIXED_LEN + CONFIG_MEMBER_LEN * (voters.len() + learners.len())
            }
            LogCommand::Request {
                body: RequestBody::Keepalive { tokens, .. },
                ..
            } => LOG_KEEPALIVE_FIXED_LEN + tokens.as_bytes().len(),
            LogCommand::Request { body, .. } => {
                let (resource, client) = body.ids();
                LOG_REQUEST_FIXED_LEN
                    + resource.len()
                    + client.len()
                    + target_len(body.msg_type().to_wire())
            }
        }
    }

    /// Encodes the command into `buf`; returns its length. Refuses (writing nothing the
    /// caller should use) what [`LogCommand::decode`] would refuse.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.encoded_len();
        match *self {
            LogCommand::Init { token_first: value } | LogCommand::Tick { stamp: value } => {
                let out = buf.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
                out[field::KIND] = self.kind().to_wire();
                out[field::VALUE].copy_from_slice(&value.to_be_bytes());
            }
            LogCommand::Settings {
                ttl_default_ms,
                retry_after_ms,
                startup_grace_ms,
            } => {
                let out = buf.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
                out[field::KIND] = self.kind().to_wire();
                out[field::TTL_DEFAULT_MS].copy_from_slice(&ttl_default_ms.to_be_bytes());
                out[field::RETRY_AFTER_MS].copy_from_slice(&retry_after_ms.to_be_bytes());
                out[field::STARTUP_GRACE_MS].copy_from_slice(&startup_grace_ms.to_be_bytes());
            }
            LogCommand::Config { voters, learners } => {
                if !config_members_ok(voters, learners) {
                    return Err(EncodeError::BadMembers);
                }
                let out = buf.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
                out[field::KIND] = self.kind().to_wire();
                out[field::VOTER_COUNT] = voters.len() as u8;
                out[field::LEARNER_COUNT] = learners.len() as u8;
                let split = field::MEMBERS + voters.0.len();
                out[field::MEMBERS..split].copy_from_slice(voters.0);
                out[split..].copy_from_slice(learners.0);
            }
            LogCommand::Request {
                stamp,
                session_id,
                request_id,
                attempt,
                room_for_waiting,
                reply_to,
                body,
            } => {
                let kind = body.kind();
                if !kind.is_logged() {
                    return Err(EncodeError::WrongType);
                }
                let (resource, client) = body.ids();
                let bad_len = |id: &[u8]| id.is_empty() || id.len() > ID_LEN_MAX;
                if let RequestBody::Keepalive { tokens, .. } = body {
                    if !(1..=KEEPALIVE_TOKENS_MAX).contains(&tokens.len()) {
                        return Err(EncodeError::BadTokenCount);
                    }
                } else if bad_len(resource) || body.client().is_some_and(bad_len) {
                    return Err(EncodeError::BadIdLength);
                }
                if session_id == 0 || request_id == 0 {
                    return Err(EncodeError::ZeroId);
                }
                let (wait_ms, ttl_ms) = body.numbers();
                let out = buf.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
                out[field::KIND] = self.kind().to_wire();
                out[field::VALUE].copy_from_slice(&stamp.to_be_bytes());
                out[field::SESSION_ID].copy_from_slice(&session_id.to_be_bytes());
                out[field::REQUEST_ID].copy_from_slice(&request_id.to_be_bytes());
                out[field::ATTEMPT].copy_from_slice(&attempt.to_be_bytes());
                out[field::FLAGS] = if room_for_waiting {
                    FLAG_ROOM_FOR_WAITING
                } else {
                    0
                };
                let ip = match reply_to.ip() {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                out[field::ADDR].copy_from_slice(&ip.octets());
                out[field::PORT].copy_from_slice(&reply_to.port().to_be_bytes());
                out[field::OP] = kind.request_type().to_wire();
                out[field::WAIT_MS].copy_from_slice(&wait_ms.to_be_bytes());
                out[field::TTL_MS].copy_from_slice(&ttl_ms.to_be_bytes());
                if let RequestBody::Keepalive { tokens, .. } = body {
                    out[LOG_KEEPALIVE_FIXED_LEN..].copy_from_slice(tokens.as_bytes());
                    return Ok(len);
                }
                out[field::RESOURCE_LEN] = resource.len() as u8;
                let at = field::RESOURCE + resource.len();
                out[field::RESOURCE..at].copy_from_slice(resource);
                out[at] = client.len() as u8;
                let client_at = at + 1;
                let at = client_at + client.len();
                out[client_at..at].copy_from_slice(client);
                if let RequestBody::CancelWait {
                    target_session,
                    target_request,
                    ..
                } = body
                {
                    out[at..at + 8].copy_from_slice(&target_session.to_be_bytes());
                    out[at + 8..at + 16].copy_from_slice(&target_request.to_be_bytes());
                }
                debug_assert_eq!(at + target_len(out[field::OP]), len);
            }
        }
        Ok(len)
    }
}

/// Spec §8.7, CONFIG: at least one voter, at most [`CONFIG_MEMBERS_MAX`] members, no node
/// id 0, no voter with replica id 0, no node named twice (in one list or in both).
fn config_members_ok(voters: Replicas<'_>, learners: Replicas<'_>) -> bool {
    if voters.is_empty() || voters.len() + learners.len() > CONFIG_MEMBERS_MAX {
        return false;
    }
    if voters.iter().any(|voter| voter.replica == 0) {
        return false;
    }
    let members = || voters.iter().chain(learners.iter());
    members().enumerate().all(|(position, member)| {
        member.node != 0
            && !members()
                .take(position)
                .any(|other| other.node == member.node)
    })
}

/// Bytes a REQUEST of op byte `op` carries after its client id: CANCEL_WAIT's target, none
/// for the other ops (an unknown op is refused later, as `BadOp`).
fn target_len(op: u8) -> usize {
    if op == MessageType::CancelWait.to_wire() {
        LOG_REQUEST_TARGET_LEN
    } else {
        0
    }
}

/// The operation of a REQUEST command from its op byte and fields (the inverse of
/// [`RequestBody::numbers`], [`RequestBody::target`] and `ids`), checked in the spec's order:
/// the op, the client id, the fields the op requires to be zero.
fn decode_body<'a>(
    op: u8,
    wait_ms: u32,
    ttl_ms: u32,
    resource: &'a [u8],
    client: &'a [u8],
    target: (u64, u64),
) -> Result<RequestBody<'a>, DecodeError> {
    let kind = MessageType::from_wire(op)
        .and_then(RequestKind::of_request_type)
        .filter(|kind| kind.is_logged() && *kind != RequestKind::Keepalive)
        .ok_or(DecodeError::BadOp)?;
    let body = RequestBody::from_parts(kind, resource, client, (wait_ms, ttl_ms), target);
    match (body.client().is_some(), client.is_empty()) {
        (false, false) => return Err(DecodeError::NonZeroField),
        (true, true) => return Err(DecodeError::EmptyId),
        _ => {}
    }
    // What the op has no field for must be zero: then the body gives the bytes back.
    if body.numbers() != (wait_ms, ttl_ms) {
        return Err(DecodeError::NonZeroField);
    }
    Ok(body)
}
