//! The simulator's side of the wire: its clients think in lock-table requests and answers,
//! its nodes speak datagrams. A request is encoded as a real client would send it (padded
//! to the length its byte budget says), and what a node sends a client is decoded as a real
//! client would read it. Raft messages inside PEER datagrams are decoded for the checkers and
//! the scenario scripts, which look at them without the nodes knowing.

use std::net::SocketAddr;

use udplock_protocol::{
    AddressToken, Flags, Hint, MembersReply, PeerDatagram, PeerHeader, PeerMessage, PeerWriter,
    Reply, Request, RequestBody, RequestKind, Status, DATAGRAM_LEN_MAX, PEER_DATAGRAM_LEN_MAX,
    REQUEST_LEN_MIN,
};

use super::clients::{status_len, ReplyMsg};
use crate::core::lock_table::{self, Answer, IdBuf, RequestId};
use crate::core::node::requests::table_request;
use crate::core::raft::{Message, NodeId};

/// The address node `id` listens on in every simulation.
pub(super) fn node_addr(id: NodeId) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, id as u8], 7000))
}

/// The node listening on `addr`, if any.
pub(super) fn node_at(addr: SocketAddr, nodes: usize) -> Option<NodeId> {
    (1..=nodes as NodeId).find(|&id| node_addr(id) == addr)
}

/// The datagram a client sends for `request`: the same request id, attempt and operation,
/// `len` bytes long (`None`: as long as a client makes it — a STATUS as long as the
/// simulator's clients choose for its request id, any other request padded as the codec
/// pads it). The length is the client's, never the budget the request's conversion
/// recorded, so that the no-amplification check judges bytes against bytes. Checked to
/// decode, by the node's own reading, to `request` again.
/// With `token`, the address token after the body (spec §3.1, §7.1.9).
pub(super) fn request_datagram(
    request: &lock_table::Request<'_>,
    len: Option<usize>,
    token: Option<&AddressToken>,
) -> Vec<u8> {
    let body = request.body;
    let wire = Request {
        session_id: request.id.session,
        request_id: request.id.request,
        attempt: request.attempt,
        body,
    };
    let len = len.unwrap_or(match body {
        RequestBody::Status { .. } => usize::from(status_len(request.id.request)),
        _ => wire.padded_len(),
    });
    let mut out = vec![0u8; DATAGRAM_LEN_MAX];
    let len = wire
        .encode_padded_with_token(&mut out, len.max(REQUEST_LEN_MIN), token)
        .expect("a simulated request encodes");
    out.truncate(len);
    let decoded = Request::decode(&out).expect("a simulated request decodes");
    let again = table_request(&decoded, request.reply_to, out.len());
    assert_eq!(
        &again, request,
        "a request does not survive the wire: {len} bytes"
    );
    out
}

/// The (session, request) ids a MEMBERS_REPLY datagram answers (`None`: not one).
pub(super) fn members_reply_id(datagram: &[u8]) -> Option<RequestId> {
    let reply = MembersReply::decode(datagram).ok()?;
    Some(RequestId {
        session: reply.session_id,
        request: reply.request_id,
    })
}

/// What a client makes of a datagram from a node (`None`: not a reply it can read, which no
/// correct node sends).
pub(super) fn reply_msg(datagram: &[u8], to: SocketAddr, nodes: usize) -> Option<ReplyMsg> {
    let reply = Reply::decode(datagram).ok()?;
    let kind = RequestKind::of_reply_type(reply.msg_type)?;
    let id = RequestId {
        session: reply.session_id,
        request: reply.request_id,
    };
    if let (Status::Retry, Hint::AddressToken(token)) = (reply.status, reply.hint) {
        return Some(ReplyMsg::Retry {
            id,
            attempt: reply.attempt,
            kind,
            token,
        });
    }
    if reply.status == Status::NotLeader {
        let hint = match reply.hint {
            Hint::Leader(addr) => node_at(addr, nodes),
            _ => None,
        };
        return Some(ReplyMsg::NotLeader {
            id,
            attempt: reply.attempt,
            kind,
            hint,
        });
    }
    let retry_after_ms = match reply.hint {
        Hint::RetryAfter { ms } => ms,
        _ => 0,
    };
    Some(ReplyMsg::Answer(Box::new(lock_table::Reply {
        to,
        id,
        attempt: reply.attempt,
        kind,
        answer: Answer {
            status: reply.status,
            fencing_token: reply.fencing_token,
            hold_count: reply.hold_count,
            lease_ms: reply.lease_ms,
            waiter_count: reply.waiter_count,
            retry_after_ms,
            queued: reply.flags.contains(Flags::QUEUED),
        },
        holder: IdBuf::new(reply.holder),
        holder_truncated: reply.flags.contains(Flags::HOLDER_TRUNCATED),
    })))
}

/// The Raft messages a PEER datagram carries, by shard (none if it does not decode).
pub(super) fn peer_messages(datagram: &[u8]) -> Vec<(u16, Message)> {
    match PeerDatagram::decode(datagram) {
        Ok(peer) => peer
            .records()
            .map(|(shard, record)| (shard, record.into_owned()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// What the checkers read of a PEER datagram without decoding its messages whole: the
/// (shard, term) of each APPEND or INSTALL_SNAPSHOT it carries, into `from_leader`, and the
/// `match_index` of its first successful APPEND_REPLY, if any (for the scripts).
pub(super) fn peer_glance(datagram: &[u8], from_leader: &mut Vec<(u16, u64)>) -> Option<u64> {
    from_leader.clear();
    let Ok(peer) = PeerDatagram::decode(datagram) else {
        return None;
    };
    let mut ack = None;
    for (shard, record) in peer.records() {
        match record {
            PeerMessage::Append { term, .. } | PeerMessage::InstallSnapshot { term, .. } => {
                from_leader.push((shard, term));
            }
            PeerMessage::AppendReply {
                success: true,
                match_index,
                ..
            } => {
                ack = ack.or(Some(match_index));
            }
            _ => {}
        }
    }
    ack
}

/// An unauthenticated PEER datagram from node `from` of cluster `cluster_id` carrying
/// `messages` (what a cluster without keys sends, and what anyone can forge there).
/// The SWIM records of a PEER datagram alone, in a datagram of their own (unauthenticated:
/// for the scenarios, which rebuild the datagrams that carry Raft messages); `None` if it
/// carries none.
pub(super) fn swim_datagram(cluster_id: u64, from: NodeId, datagram: &[u8]) -> Option<Vec<u8>> {
    let peer = PeerDatagram::decode(datagram).ok()?;
    let mut out = vec![0u8; PEER_DATAGRAM_LEN_MAX];
    let mut writer = PeerWriter::new(&mut out, PeerHeader { cluster_id, from });
    for msg in peer.swim_records() {
        writer
            .push_swim(&msg)
            .expect("records of one datagram fit one datagram");
    }
    let len = writer.finish();
    out.truncate(len);
    (len > 0).then_some(out)
}

pub(super) fn peer_datagram(cluster_id: u64, from: NodeId, messages: &[(u16, Message)]) -> Vec<u8> {
    let mut out = vec![0u8; PEER_DATAGRAM_LEN_MAX];
    let mut writer = PeerWriter::new(&mut out, PeerHeader { cluster_id, from });
    for (shard, msg) in messages {
        writer
            .push(*shard, msg)
            .expect("held messages fit one datagram each");
    }
    let len = writer.finish();
    out.truncate(len);
    out
}
