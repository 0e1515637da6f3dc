//! The node's UDP socket and wall clock: binding with a large receive buffer, the read
//! timeout that makes the event loop sleep until its next timer, and which `recv` errors only
//! mean "nothing now".

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration as StdDuration;

use socket2::{Domain, Protocol, Socket, Type};

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

/// The socket's read timeout, set to the time left until the next timer (the loop blocks in
/// `recv_from` until a datagram or the timer), skipping the system call while the timeout
/// already set would wake the loop close enough to the timer.
#[derive(Default)]
pub(crate) struct ReadTimer {
    current: Option<StdDuration>,
}

/// How late a timer may fire because the loop kept an earlier read timeout instead of a
/// system call: small beside every timer it serves (leases and waits in milliseconds, Raft's
/// heartbeats and elections in tens of milliseconds), and always in the safe direction (a
/// lease is freed later, never earlier).
const TIMER_LATE_MAX: StdDuration = StdDuration::from_micros(1_000);

/// How early: waking early costs one more turn of the loop.
const TIMER_EARLY_MAX: StdDuration = StdDuration::from_micros(100);

impl ReadTimer {
    /// Arms for `next` (`None`: block until a datagram).
    pub(crate) fn arm(&mut self, socket: &UdpSocket, next: Option<Instant>, now: Instant) {
        let timeout = next.map(|t| {
            let us = t.saturating_since(now).as_micros();
            // A zero timeout means "block forever" to the OS; wait at least 1 µs instead.
            StdDuration::from_micros(us.max(1))
        });
        let differs = match (timeout, self.current) {
            (Some(wanted), Some(set)) => {
                set > wanted + TIMER_LATE_MAX || set + TIMER_EARLY_MAX < wanted
            }
            (None, None) => false,
            _ => true,
        };
        if differs && socket.set_read_timeout(timeout).is_ok() {
            self.current = timeout;
        }
    }
}

/// `recv_from` that never blocks, whatever the socket's mode (`MSG_DONTWAIT`): one system
/// call, where switching the socket to non-blocking and back costs two more around it.
/// `WouldBlock` when nothing waits. A source that is not an IP address (impossible on a UDP
/// socket bound to one) is reported as `InvalidData`.
pub(crate) fn recv_from_now(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    let (_, len, from) =
        rustix::net::recvfrom(socket, &mut *buf, rustix::net::RecvFlags::DONTWAIT)?;
    // The datagram's own length may exceed the buffer (the rest is cut, as `recv_from` does).
    let len = len.min(buf.len());
    let from = from
        .and_then(|a| SocketAddr::try_from(a).ok())
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
    Ok((len, from))
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
