//! The floor every figure is divided by: the raw UDP round trip between an echo thread and
//! the calling thread, measured in the same run and placement (phase 1, `raw udp rtt`).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::LockError;

use super::placement::pin_current;

/// The floor: a blocking echo thread that owns its socket (like the node's event loop) and a
/// socket of the calling thread's (like the client's), exchanging 76-byte datagrams (the size
/// of an acquire and of its reply).
pub(super) struct Echo {
    sock: UdpSocket,
    to: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    /// Starts the echo thread, pinned to `cpu` if given (where the node runs).
    pub(super) fn start(cpu: Option<usize>) -> Result<Echo, LockError> {
        let io = |e: std::io::Error| LockError::InternalError(format!("raw RTT socket: {e}"));
        let echo = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
        let to = echo.local_addr().map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("udplock-echo".into())
                .spawn(move || {
                    pin_current(cpu);
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Acquire) {
                        if let Ok((n, from)) = echo.recv_from(&mut buf) {
                            let _ = echo.send_to(&buf[..n], from);
                        }
                    }
                })
                .map_err(io)?
        };
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
        sock.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(io)?;
        Ok(Echo {
            sock,
            to,
            stop,
            thread: Some(thread),
        })
    }

    /// One round trip; `None` if the echo was lost (loopback does not lose, but never hang).
    pub(super) fn round_trip(&self) -> Option<Duration> {
        let msg = [0x5Au8; udplock_protocol::REPLY_LEN_MIN];
        let mut buf = [0u8; 2048];
        let t0 = Instant::now();
        self.sock.send_to(&msg, self.to).ok()?;
        self.sock.recv_from(&mut buf).ok()?;
        Some(t0.elapsed())
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.sock.send_to(&[0], self.to);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
