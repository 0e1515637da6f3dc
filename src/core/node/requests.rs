//! Client requests and their answers, between the wire and the lock table: which table
//! command a decoded request asks for, the reply datagram of a table answer, and the
//! ERROR_REPLY of a request that does not decode (spec §3.2). Shared by every shell that
//! serves clients.

use std::net::SocketAddr;

use udplock_protocol::header::HeaderIds;
use udplock_protocol::{
    EncodeError, Flags, Hint, MessageType, Reply, Request, RequestKind, REPLY_LEN_MIN,
};

use crate::core::lock_table::{self, RequestId};

/// The lock-table request a decoded client datagram of `datagram_len` bytes from `from` asks
/// for: the request's own operation, with the datagram's length as its reply byte budget.
pub fn table_request<'a>(
    request: &Request<'a>,
    from: SocketAddr,
    datagram_len: usize,
) -> lock_table::Request<'a> {
    lock_table::Request {
        id: RequestId {
            session: request.session_id,
            request: request.request_id,
        },
        attempt: request.attempt,
        reply_to: from,
        body: request.body,
        // At most DATAGRAM_LEN_MAX (the shells drop longer datagrams before decoding).
        datagram_len: u16::try_from(datagram_len).unwrap_or(u16::MAX),
    }
}

/// Spec §3.2: the ERROR_REPLY for a request that did not decode, if the codec names a status
/// for its fault and the reply fits in the request; `None`: drop it silently.
pub fn error_reply(
    datagram: &[u8],
    error: udplock_protocol::DecodeError,
    out: &mut [u8],
) -> Option<usize> {
    let (status, ids) = (error.reply_status()?, HeaderIds::peek(datagram)?);
    // Whatever the version, a reply or node-to-node type is never answered: answering
    // replies could make two endpoints answer each other forever (spec §3.2).
    if (0x40..0xC0).contains(&datagram[udplock_protocol::header::field::MSG_TYPE]) {
        return None;
    }
    if datagram.len() < REPLY_LEN_MIN {
        return None;
    }
    let reply = Reply::bare(
        MessageType::ErrorReply,
        ids.session_id,
        ids.request_id,
        ids.attempt,
        status,
    );
    // A zero session or request id cannot be echoed (and no client could match it).
    reply.encode(out).ok()
}

/// The reply datagram for a table answer. Its size is already decided: the core left out a
/// STATUS_REPLY's holder unless it fitted in the byte budget its own request carried (spec
/// §2.2 rule 5, `lock_table::fit_holder`), wherever and whenever the reply is sent.
pub fn encode_reply(r: &lock_table::Reply, out: &mut [u8]) -> Result<usize, EncodeError> {
    let mut flags = Flags::empty();
    if r.answer.queued {
        flags |= Flags::QUEUED;
    }
    if r.holder_truncated {
        flags |= Flags::HOLDER_TRUNCATED;
    }
    let holder = r.holder.as_slice();
    let reply = Reply {
        msg_type: r.kind.reply_type(),
        flags,
        session_id: r.id.session,
        request_id: r.id.request,
        attempt: r.attempt,
        status: r.answer.status,
        hold_count: r.answer.hold_count,
        fencing_token: r.answer.fencing_token,
        lease_ms: r.answer.lease_ms,
        waiter_count: r.answer.waiter_count,
        hint: if r.answer.retry_after_ms > 0 {
            Hint::RetryAfter {
                ms: r.answer.retry_after_ms,
            }
        } else {
            Hint::None
        },
        holder,
    };
    let len = reply.encode(out)?;
    // Only a STATUS_REPLY is longer than the shortest request (spec §2.2 rule 5).
    assert!(
        len == REPLY_LEN_MIN || (r.kind == RequestKind::Status && !r.holder_truncated),
        "a {:?} reply of {len} bytes",
        r.kind
    );
    Ok(len)
}
