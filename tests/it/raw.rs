//! A hostile host's tools, for tests: send UDP datagrams with a source address and port of
//! our choosing (a listed node's own, while that node runs), and capture the datagrams nodes
//! send each other, to replay them later.
//!
//! - [`Spoofer`]: a raw IPv4 socket with `IP_HDRINCL`; each datagram gets a hand-built IPv4
//!   header (RFC 791) and UDP header (RFC 768, checksum over the pseudo-header), so the
//!   kernel sends it as it is, source included.
//! - [`Capture`]: a raw `IPPROTO_UDP` socket, which receives a copy of every UDP datagram
//!   delivered to this host (IPv4 header included); it keeps those between the ports asked
//!   for. On loopback every datagram is delivered once, so each is captured once.
//!
//! Both need `CAP_NET_RAW` (root, as on the project's machines and CI). Without it they
//! panic with a message saying so: a test that cannot attack must fail, never pass by doing
//! nothing.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Bytes of an IPv4 header without options.
const IPV4_HEADER_LEN: usize = 20;
/// Bytes of a UDP header.
const UDP_HEADER_LEN: usize = 8;
/// The IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;
/// Longest UDP payload this helper sends or captures (an IPv4 datagram's 65,535 bytes less
/// the headers).
const PAYLOAD_LEN_MAX: usize = 65_535 - IPV4_HEADER_LEN - UDP_HEADER_LEN;

fn raw_socket(protocol: i32) -> Socket {
    match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(protocol))) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => panic!(
            "this attack test needs CAP_NET_RAW (run it as root) to send spoofed and capture \
             peer datagrams on loopback; raw socket refused: {e}"
        ),
        Err(e) => panic!("raw socket: {e}"),
    }
}

/// The v4 address of `a`: the attacks run on IPv4 loopback.
pub fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => panic!("raw sockets here speak IPv4 only: {a}"),
    }
}

/// The Internet checksum (RFC 1071): one's complement of the one's-complement sum of 16-bit
/// big-endian words.
fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for chunk in chunks {
        for &b in chunk.iter() {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends UDP datagrams with any IPv4 source address and port.
pub struct Spoofer {
    socket: Socket,
    /// IPv4 identification of the next datagram.
    ident: u16,
    /// Datagrams sent.
    pub sent: u64,
}

impl Spoofer {
    /// A raw socket (`IPPROTO_RAW`, `IP_HDRINCL`). Panics, saying why, without CAP_NET_RAW.
    pub fn new() -> Spoofer {
        let socket = raw_socket(255);
        socket
            .set_header_included_v4(true)
            .expect("IP_HDRINCL on a raw socket");
        // Room for bursts: a full send buffer would block, not drop.
        let _ = socket.set_send_buffer_size(4 << 20);
        Spoofer {
            socket,
            ident: 1,
            sent: 0,
        }
    }

    /// Sends `payload` from `from` to `to` as one UDP datagram.
    pub fn send(&mut self, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) {
        assert!(payload.len() <= PAYLOAD_LEN_MAX, "payload too long");
        let mut packet = Vec::with_capacity(IPV4_HEADER_LEN + UDP_HEADER_LEN + payload.len());
        let total = (IPV4_HEADER_LEN + UDP_HEADER_LEN + payload.len()) as u16;
        let udp_len = (UDP_HEADER_LEN + payload.len()) as u16;
        // IPv4 header: version 4, IHL 5 words; TOS 0; total length; identification; no
        // fragmentation (DF); TTL 64; UDP; checksum; source; destination.
        packet.extend_from_slice(&[0x45, 0]);
        packet.extend_from_slice(&total.to_be_bytes());
        packet.extend_from_slice(&self.ident.to_be_bytes());
        packet.extend_from_slice(&[0x40, 0, 64, IPPROTO_UDP, 0, 0]);
        packet.extend_from_slice(&from.ip().octets());
        packet.extend_from_slice(&to.ip().octets());
        let ip_sum = checksum(&[&packet[..IPV4_HEADER_LEN]]);
        packet[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        // UDP header, checksummed with the pseudo-header (source, destination, protocol,
        // length); a computed 0 is sent as 0xFFFF (RFC 768).
        let mut udp = [0u8; UDP_HEADER_LEN];
        udp[0..2].copy_from_slice(&from.port().to_be_bytes());
        udp[2..4].copy_from_slice(&to.port().to_be_bytes());
        udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&from.ip().octets());
        pseudo[4..8].copy_from_slice(&to.ip().octets());
        pseudo[9] = IPPROTO_UDP;
        pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
        let udp_sum = match checksum(&[&pseudo, &udp, payload]) {
            0 => 0xFFFF,
            s => s,
        };
        udp[6..8].copy_from_slice(&udp_sum.to_be_bytes());
        packet.extend_from_slice(&udp);
        packet.extend_from_slice(payload);
        self.ident = self.ident.wrapping_add(1);
        let dest = SocketAddr::V4(SocketAddrV4::new(*to.ip(), 0));
        loop {
            match self.socket.send_to(&packet, &dest.into()) {
                Ok(n) => {
                    assert_eq!(n, packet.len(), "raw send cut the datagram");
                    break;
                }
                // A full queue on loopback: wait for it, the kernel drains it at once.
                Err(e) if e.raw_os_error() == Some(105) => {
                    std::thread::sleep(Duration::from_micros(50))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("spoofed send from {from} to {to}: {e}"),
            }
        }
        self.sent += 1;
    }
}

/// One captured UDP datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    pub from: SocketAddrV4,
    pub to: SocketAddrV4,
    pub payload: Vec<u8>,
}

/// Captures the UDP datagrams delivered to this host between some ports.
pub struct Capture {
    socket: Socket,
    /// Ports of the nodes watched: a datagram is kept if both its ports are among them.
    ports: Vec<u16>,
}

impl Capture {
    /// Starts capturing datagrams between any two of `addrs` (the nodes' addresses).
    /// Panics, saying why, without CAP_NET_RAW.
    pub fn new(addrs: &[SocketAddr]) -> Capture {
        let socket = raw_socket(i32::from(IPPROTO_UDP));
        let _ = socket.set_recv_buffer_size(8 << 20);
        Capture {
            socket,
            ports: addrs.iter().map(SocketAddr::port).collect(),
        }
    }

    /// The next datagram between two watched ports that `keep` accepts, waiting at most
    /// `within` for it.
    pub fn next(
        &self,
        within: Duration,
        mut keep: impl FnMut(&Captured) -> bool,
    ) -> Option<Captured> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let n = match (&self.socket).read(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return None
                }
                // A signal (the test harness, a child process ending) cut the wait short.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("capture: {e}"),
            };
            if let Some(c) = self.parse(&buf[..n]) {
                if keep(&c) {
                    return Some(c);
                }
            }
        }
    }

    /// Every datagram between watched ports that `keep` accepts for `during`.
    pub fn collect(
        &self,
        during: Duration,
        mut keep: impl FnMut(&Captured) -> bool,
    ) -> Vec<Captured> {
        let until = Instant::now() + during;
        let mut all = Vec::new();
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Some(c) = self.next(left, &mut keep) {
                all.push(c);
            }
        }
        all
    }

    fn parse(&self, b: &[u8]) -> Option<Captured> {
        if b.len() < IPV4_HEADER_LEN || b[0] >> 4 != 4 || b[9] != IPPROTO_UDP {
            return None;
        }
        let ihl = usize::from(b[0] & 0x0F) * 4;
        let total = usize::from(u16::from_be_bytes([b[2], b[3]])).min(b.len());
        let udp = b.get(ihl..total)?;
        if udp.len() < UDP_HEADER_LEN {
            return None;
        }
        let src_port = u16::from_be_bytes([udp[0], udp[1]]);
        let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
        if !self.ports.contains(&src_port) || !self.ports.contains(&dst_port) {
            return None;
        }
        let ip = |at: usize| Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]);
        Some(Captured {
            from: SocketAddrV4::new(ip(12), src_port),
            to: SocketAddrV4::new(ip(16), dst_port),
            payload: udp[UDP_HEADER_LEN..].to_vec(),
        })
    }
}
