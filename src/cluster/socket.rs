//! The node's UDP socket and wall clock: binding with a large receive buffer, the read
//! timeout that makes the event loop sleep until its next timer, and which `recv` errors only
//! mean "nothing now".

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration as StdDuration;

use socket2::{Domain, Protocol, Socket, Type};
use udplock_protocol::PEER_DATAGRAM_LEN_MAX;

use crate::core::node::NodeStats;
use crate::core::time::Instant;

/// Socket receive buffer asked of the kernel: room for a burst of a few thousand requests
/// while the loop is busy, so bursts queue instead of being dropped.
pub const RECV_BUFFER_BYTES: usize = 4 << 20;

/// A UDP socket bound to `addr` with the node's receive buffer.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // A larger receive buffer is a best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The socket's read timeout, set from the time left until the next timer (the loop blocks
/// in `recv_from` until a datagram or the timer), skipping the system call while the timeout
/// already set still wakes the loop in time and not too early.
///
/// `SO_RCVTIMEO` is relative to each `recv`, while the core's timers are absolute and move
/// with every input (a follower's election deadline is drawn again on every APPEND, a leader's
/// heartbeat slides with each one it sends): a timeout set to exactly the time left is wrong
/// at the next turn, and setting it again on every turn cost a `setsockopt` per datagram. So
/// the timeout set is half the time left ([`ReadTimer::choose`]): it stays right while the
/// time left stays between a little under it and 4× it, which a timer drawn anew in [T, 2T]
/// (Raft's election timeout) or one that slides forward (a heartbeat) always does. Waking
/// early costs one turn of the loop that finds nothing due and waits again (the next `recv`
/// waits the same timeout, so an idle loop wakes at most twice per timer).
#[derive(Default)]
pub(crate) struct ReadTimer {
    current: Option<StdDuration>,
}

/// How late a timer may fire because the loop kept an earlier read timeout instead of a
/// system call: small beside every timer it serves (leases and waits in milliseconds, Raft's
/// heartbeats and elections in tens of milliseconds), and always in the safe direction (a
/// lease is freed later, never earlier).
const TIMER_LATE_MAX: StdDuration = StdDuration::from_micros(1_000);

/// The shortest read timeout set (a zero timeout means "block forever" to the OS).
const TIMER_MIN: StdDuration = StdDuration::from_micros(1);

impl ReadTimer {
    /// Arms for `next` (`None`: block until a datagram).
    pub(crate) fn arm(&mut self, socket: &UdpSocket, next: Option<Instant>, now: Instant) {
        let wanted = next.map(|t| StdDuration::from_micros(t.saturating_since(now).as_micros()));
        if let Some(timeout) = ReadTimer::choose(self.current, wanted) {
            if socket.set_read_timeout(timeout).is_ok() {
                self.current = timeout;
            }
        }
    }

    /// The read timeout to set for a timer `wanted` from now (`None`: no timer) while
    /// `current` is set, or `None` to keep `current`: it is kept while it wakes the loop at
    /// most [`TIMER_LATE_MAX`] late and at most 4× early; otherwise the new one is half of
    /// `wanted` (at least [`TIMER_MIN`]).
    pub(crate) fn choose(
        current: Option<StdDuration>,
        wanted: Option<StdDuration>,
    ) -> Option<Option<StdDuration>> {
        match (current, wanted) {
            (None, None) => None,
            (Some(_), None) => Some(None),
            (current, Some(wanted)) => {
                let keep = current.is_some_and(|set| {
                    set <= wanted + TIMER_LATE_MAX && set.saturating_mul(4) >= wanted
                });
                (!keep).then_some(Some((wanted / 2).max(TIMER_MIN)))
            }
        }
    }
}

/// Most datagrams one `recvmmsg` takes ([`RecvBatch`]).
pub(crate) const RECV_BATCH_MAX: usize = 16;

/// Room for the largest datagram of either kind, plus one byte to see oversized ones (a
/// longer datagram is cut to this, and the core drops it as too long).
const RECV_BUF_LEN: usize = if PEER_DATAGRAM_LEN_MAX > udplock_protocol::DATAGRAM_LEN_MAX {
    PEER_DATAGRAM_LEN_MAX + 1
} else {
    udplock_protocol::DATAGRAM_LEN_MAX + 1
};

/// Datagrams received together: one `recvmmsg(2)` system call takes up to
/// [`RECV_BATCH_MAX`] of them. Waiting, it blocks (until the socket's read timeout) for the
/// first and takes the others already queued without waiting (`MSG_WAITFORONE`): the drain
/// that followed each wake-up, and its system call that found nothing when requests come one
/// at a time, are gone.
pub(crate) struct RecvBatch {
    /// [`RECV_BATCH_MAX`] buffers of [`RECV_BUF_LEN`] bytes.
    bufs: Vec<Vec<u8>>,
    headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
    /// Per datagram received by the last [`RecvBatch::recv`]: its length (cut to the buffer)
    /// and source (`None`: not an IP address, impossible on a UDP socket bound to one).
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl Default for RecvBatch {
    fn default() -> RecvBatch {
        RecvBatch {
            bufs: (0..RECV_BATCH_MAX).map(|_| vec![0; RECV_BUF_LEN]).collect(),
            headers: nix::sys::socket::MultiHeaders::preallocate(RECV_BATCH_MAX, None),
            got: Vec::with_capacity(RECV_BATCH_MAX),
        }
    }
}

impl RecvBatch {
    /// Receives up to `max` datagrams (at most [`RECV_BATCH_MAX`]): with `wait`, blocks until
    /// the first (or the socket's read timeout: `WouldBlock`) and takes the rest already
    /// queued; without, takes what is queued (`WouldBlock` if nothing). Returns how many.
    pub(crate) fn recv(&mut self, socket: &UdpSocket, wait: bool, max: usize) -> io::Result<usize> {
        use nix::sys::socket::{recvmmsg, MsgFlags, SockaddrLike};
        use std::os::fd::AsRawFd;
        let RecvBatch { bufs, headers, got } = self;
        got.clear();
        let mut bufs = bufs.iter_mut();
        let mut slices: [[io::IoSliceMut<'_>; 1]; RECV_BATCH_MAX] =
            std::array::from_fn(|_| [io::IoSliceMut::new(bufs.next().expect("one each"))]);
        let flags = match wait {
            true => MsgFlags::MSG_WAITFORONE,
            false => MsgFlags::MSG_DONTWAIT,
        };
        // The headers are reused: each source address length the kernel wrote back stays as
        // the room for the next (nix sets it once). A socket bound to one address receives
        // from one family only (an IPv6 socket's IPv4 sources are IPv4-mapped IPv6), whose
        // addresses all have the same length, so no source is ever cut.
        let slices = slices.iter_mut().take(max.clamp(1, RECV_BATCH_MAX));
        let received =
            recvmmsg(socket.as_raw_fd(), headers, slices, flags, None).map_err(io::Error::from)?;
        for msg in received {
            let from = msg.address.and_then(|a| match a.family() {
                Some(nix::sys::socket::AddressFamily::Inet) => a
                    .as_sockaddr_in()
                    .map(|a| SocketAddr::V4(std::net::SocketAddrV4::from(*a))),
                Some(nix::sys::socket::AddressFamily::Inet6) => a
                    .as_sockaddr_in6()
                    .map(|a| SocketAddr::V6(std::net::SocketAddrV6::from(*a))),
                _ => None,
            });
            got.push((msg.bytes.min(RECV_BUF_LEN), from));
        }
        Ok(got.len())
    }

    /// Datagram `i` of the last [`RecvBatch::recv`]: its bytes and source.
    pub(crate) fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let (len, from) = self.got[i];
        (&self.bufs[i][..len], from)
    }
}

/// Whether a `recv_from` error only means "nothing to read now" (or concerns one peer).
pub(crate) fn recv_error_is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Interrupted
            // An ICMP error for an earlier datagram surfaces on Linux as a refused connection
            // on the next recv; it concerns that peer only.
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}

/// The wall clock, in µs since the Unix epoch (0 before it).
pub(crate) fn wall_clock_micros() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX)
}

/// Most datagrams one `sendmmsg` carries: a leader's flush under load (an APPEND per
/// follower and per batch of shards, answers to many clients) fits in a few calls.
pub(crate) const SEND_BATCH_MAX: usize = 32;

/// The datagrams of one flush, sent together: one `sendmmsg(2)` system call for up to
/// [`SEND_BATCH_MAX`] of them instead of one `sendto` each (a lone datagram still goes by
/// `sendto`, which needs no headers built).
pub(crate) struct SendBatch {
    /// [`SEND_BATCH_MAX`] buffers of [`PEER_DATAGRAM_LEN_MAX`] bytes, the first `len` in use.
    bufs: Vec<Vec<u8>>,
    /// Per datagram in use: its destination, length and whether it goes to a peer.
    meta: Vec<(SocketAddr, usize, bool)>,
}

/// What one [`SendBatch::send`] did, for the node's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Answers to clients the kernel took.
    pub(crate) replies: u64,
    /// Datagrams the kernel refused (each is lost; its sender's timer covers it).
    pub(crate) errors: u64,
}

impl Sent {
    /// Adds these counts to the node's.
    pub(crate) fn count_in(self, stats: &NodeStats) {
        use std::sync::atomic::Ordering;
        if self.replies > 0 {
            stats.replies.fetch_add(self.replies, Ordering::Relaxed);
        }
        if self.errors > 0 {
            stats.send_errors.fetch_add(self.errors, Ordering::Relaxed);
        }
    }
}

impl Default for SendBatch {
    fn default() -> SendBatch {
        SendBatch {
            bufs: (0..SEND_BATCH_MAX)
                .map(|_| vec![0; PEER_DATAGRAM_LEN_MAX])
                .collect(),
            meta: Vec::with_capacity(SEND_BATCH_MAX),
        }
    }
}

impl SendBatch {
    /// The buffer the next datagram is written into (at least [`PEER_DATAGRAM_LEN_MAX`]
    /// bytes). The batch must not be full ([`SendBatch::is_full`]).
    pub(crate) fn next_buf(&mut self) -> &mut [u8] {
        &mut self.bufs[self.meta.len()]
    }

    /// Takes the datagram just written into [`SendBatch::next_buf`].
    pub(crate) fn push(&mut self, to: SocketAddr, len: usize, to_peer: bool) {
        assert!(
            self.meta.len() < SEND_BATCH_MAX,
            "a full batch is sent first"
        );
        self.meta.push((to, len, to_peer));
    }

    pub(crate) fn is_full(&self) -> bool {
        self.meta.len() == SEND_BATCH_MAX
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Sends every datagram taken, in order, and empties the batch.
    pub(crate) fn send(&mut self, socket: &UdpSocket) -> Sent {
        let mut sent = Sent::default();
        let count = |sent: &mut Sent, ok: bool, to_peer: bool| match (ok, to_peer) {
            (true, false) => sent.replies += 1,
            (true, true) => {}
            (false, _) => sent.errors += 1,
        };
        if let [(to, len, to_peer)] = self.meta[..] {
            let ok = socket.send_to(&self.bufs[0][..len], to).is_ok();
            count(&mut sent, ok, to_peer);
            self.meta.clear();
            return sent;
        }
        let mut first = 0;
        while first < self.meta.len() {
            match self.send_some(socket, first) {
                // The kernel took `n` datagrams from `first` on (fewer than asked: the next
                // one failed, and the next call says how).
                Ok(n) if n > 0 => {
                    for &(_, _, to_peer) in &self.meta[first..first + n] {
                        count(&mut sent, true, to_peer);
                    }
                    first += n;
                }
                // The datagram at `first` was refused: count it and go on after it.
                _ => {
                    count(&mut sent, false, false);
                    first += 1;
                }
            }
        }
        self.meta.clear();
        sent
    }

    /// One `sendmmsg` of the datagrams from `first` on: how many the kernel took.
    fn send_some(&self, socket: &UdpSocket, first: usize) -> io::Result<usize> {
        use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
        use std::io::IoSlice;
        let meta = &self.meta[first..];
        let addrs: Vec<SocketAddrAny> = meta.iter().map(|&(to, _, _)| to.into()).collect();
        let iovs: Vec<[IoSlice<'_>; 1]> = meta
            .iter()
            .zip(&self.bufs[first..])
            .map(|(&(_, len, _), buf)| [IoSlice::new(&buf[..len])])
            .collect();
        let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = meta
            .iter()
            .map(|_| SendAncillaryBuffer::default())
            .collect();
        let mut msgs: Vec<MMsgHdr<'_>> = addrs
            .iter()
            .zip(&iovs)
            .zip(controls.iter_mut())
            .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
            .collect();
        Ok(rustix::net::sendmmsg(
            socket,
            &mut msgs,
            SendFlags::empty(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `recvmmsg` takes what is queued, in order, with each datagram's source and length
    /// (an oversized one cut to the buffer, an empty one kept empty); a full batch leaves the
    /// rest for the next; without waiting, an empty socket is `WouldBlock`. Loopback sends
    /// are queued before `send_to` returns, so nothing here depends on timing.
    #[test]
    fn a_batch_takes_every_queued_datagram_in_order_with_its_source() {
        let socket = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let to = socket.local_addr().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = RecvBatch::default();
        let err = batch.recv(&socket, false, RECV_BATCH_MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);

        a.send_to(b"first", to).unwrap();
        b.send_to(b"second", to).unwrap();
        a.send_to(b"", to).unwrap();
        a.send_to(&[7u8; 2_000], to).unwrap();
        assert_eq!(batch.recv(&socket, true, RECV_BATCH_MAX).unwrap(), 4);
        let from = |s: &UdpSocket| Some(s.local_addr().unwrap());
        assert_eq!(batch.get(0), (&b"first"[..], from(&a)));
        assert_eq!(batch.get(1), (&b"second"[..], from(&b)));
        assert_eq!(batch.get(2), (&b""[..], from(&a)));
        let (long, source) = batch.get(3);
        assert_eq!((long.len(), source), (RECV_BUF_LEN, from(&a)));
        assert!(long.len() > PEER_DATAGRAM_LEN_MAX && long.iter().all(|&x| x == 7));

        for i in 0..RECV_BATCH_MAX + 3 {
            b.send_to(&[i as u8; 3], to).unwrap();
        }
        assert_eq!(
            batch.recv(&socket, false, RECV_BATCH_MAX).unwrap(),
            RECV_BATCH_MAX
        );
        assert_eq!(
            batch.get(RECV_BATCH_MAX - 1).0,
            &[RECV_BATCH_MAX as u8 - 1; 3][..]
        );
        // At most `max` (a single node takes one per flush): the rest waits for the next.
        assert_eq!(batch.recv(&socket, true, 1).unwrap(), 1);
        assert_eq!(batch.get(0).0, &[RECV_BATCH_MAX as u8; 3][..]);
        assert_eq!(batch.recv(&socket, true, RECV_BATCH_MAX).unwrap(), 2);
        assert_eq!(batch.get(1).0, &[RECV_BATCH_MAX as u8 + 2; 3][..]);
        let err = batch.recv(&socket, false, RECV_BATCH_MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // Waiting honours the read timeout the loop sets for its next timer: it returns.
        socket
            .set_read_timeout(Some(StdDuration::from_millis(1)))
            .unwrap();
        let err = batch.recv(&socket, true, RECV_BATCH_MAX).unwrap_err();
        assert!(recv_error_is_transient(&err), "{err}");
    }

    /// Turns of a loop whose timer is `deadline(turn, now)` µs from the start, one turn
    /// every `step` µs: how many times a timeout is set, and that none is late by more than
    /// [`TIMER_LATE_MAX`] (the timeout in force at each turn).
    fn run(turns: u64, step: u64, mut deadline: impl FnMut(u64, u64) -> u64) -> usize {
        let mut current = None;
        let mut sets = 0;
        for turn in 0..turns {
            let now = turn * step;
            let wanted = StdDuration::from_micros(deadline(turn, now).saturating_sub(now));
            if let Some(timeout) = ReadTimer::choose(current, Some(wanted)) {
                current = timeout;
                sets += 1;
            }
            let set = current.expect("a timer is always set here");
            assert!(
                set <= wanted + TIMER_LATE_MAX,
                "late: {set:?} for {wanted:?}"
            );
            assert!(set >= TIMER_MIN);
        }
        sets
    }

    /// A follower draws its election deadline anew in [150, 300] ms on every APPEND; with
    /// one every 100 µs the timeout is set once, not on most turns (each `setsockopt` was a
    /// system call per datagram).
    #[test]
    fn a_deadline_drawn_anew_in_t_2t_keeps_the_timeout() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let sets = run(100_000, 100, |_, now| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now + 150_000 + x % 150_001
        });
        assert_eq!(sets, 1);
    }

    /// A heartbeat that slides forward with every datagram sent: set once.
    #[test]
    fn a_sliding_deadline_keeps_the_timeout() {
        assert_eq!(run(100_000, 70, |_, now| now + 50_000), 1);
    }

    /// A fixed deadline approached turn by turn: set again only as the time left halves, so
    /// a few times per timer, not once per millisecond of it.
    #[test]
    fn a_fixed_deadline_is_approached_in_halvings() {
        let sets = run(10_000, 100, |_, _| 1_000_000);
        assert!(sets <= 12, "{sets} system calls for one timer");
        // The last stretch is served: a timer due now gets the shortest timeout.
        assert_eq!(
            ReadTimer::choose(Some(TIMER_LATE_MAX), Some(StdDuration::ZERO)),
            None,
            "within the late bound of a timer due now"
        );
        assert_eq!(
            ReadTimer::choose(Some(TIMER_LATE_MAX * 2), Some(StdDuration::ZERO)),
            Some(Some(TIMER_MIN))
        );
    }

    /// A timer much further away than the timeout set (4× or more) sets it again, so an
    /// idle loop does not wake needlessly often; no timer at all clears it.
    #[test]
    fn a_far_timer_or_none_sets_the_timeout_again() {
        let ms = StdDuration::from_millis;
        assert_eq!(ReadTimer::choose(Some(ms(10)), Some(ms(39))), None);
        assert_eq!(
            ReadTimer::choose(Some(ms(10)), Some(ms(41))),
            Some(Some(StdDuration::from_micros(20_500)))
        );
        assert_eq!(ReadTimer::choose(Some(ms(10)), None), Some(None));
        assert_eq!(ReadTimer::choose(None, None), None);
        assert_eq!(ReadTimer::choose(None, Some(ms(8))), Some(Some(ms(4))));
    }

    fn receiver() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(StdDuration::from_secs(10)))
            .unwrap();
        socket
    }

    #[test]
    fn a_batch_arrives_whole_and_in_order_and_counts_replies_apart() {
        let (a, b) = (receiver(), receiver());
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = SendBatch::default();
        for i in 0..SEND_BATCH_MAX {
            let len = 1 + i * 40;
            batch.next_buf()[..len].fill(i as u8);
            let (to, to_peer) = if i % 2 == 0 {
                (a.local_addr().unwrap(), false)
            } else {
                (b.local_addr().unwrap(), true)
            };
            batch.push(to, len, to_peer);
        }
        assert!(batch.is_full());
        let sent = batch.send(&sender);
        assert_eq!(
            sent,
            Sent {
                replies: SEND_BATCH_MAX as u64 / 2,
                errors: 0
            }
        );
        let mut buf = [0u8; 2048];
        for (socket, parity) in [(&a, 0), (&b, 1)] {
            for i in (parity..SEND_BATCH_MAX).step_by(2) {
                let (len, from) = socket.recv_from(&mut buf).unwrap();
                assert_eq!(from, sender.local_addr().unwrap());
                assert_eq!(len, 1 + i * 40, "datagram {i}");
                assert!(buf[..len].iter().all(|&x| x == i as u8), "datagram {i}");
            }
        }
        // Emptied: the next batch starts at its first buffer.
        batch.next_buf()[..3].copy_from_slice(b"one");
        batch.push(a.local_addr().unwrap(), 3, false);
        assert_eq!(batch.send(&sender).replies, 1);
        let (len, _) = a.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"one");
    }

    #[test]
    fn a_refused_datagram_is_counted_and_the_rest_still_go() {
        let a = receiver();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = SendBatch::default();
        // An IPv6 destination from an IPv4 socket is refused by the kernel.
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        for (i, to) in [a.local_addr().unwrap(), v6, a.local_addr().unwrap()]
            .into_iter()
            .enumerate()
        {
            batch.next_buf()[0] = i as u8;
            batch.push(to, 1, false);
        }
        assert_eq!(
            batch.send(&sender),
            Sent {
                replies: 2,
                errors: 1
            }
        );
        let mut buf = [0u8; 16];
        for want in [0u8, 2] {
            let (len, _) = a.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..len], &[want]);
        }
    }
}
