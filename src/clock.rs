//! The one clock the IO shells read: monotonic, and counting while the machine is suspended.
//!
//! Leases are promises about real elapsed time. The server's lease ends a TTL after its
//! grant, the client's count ends a TTL after it sent the request, and a leader's Raft lease
//! ends `election_timeout_min / (1 + drift)` after a heartbeat round started (spec §6.4,
//! §8.5). Each of them is safe only if the clock it is counted on advances whenever
//! real time does. `std::time::Instant` is `CLOCK_MONOTONIC` on Linux, which *stops* while
//! the machine is suspended (a laptop lid, a VM paused by its host for a snapshot or a live
//! migration): a client suspended for a minute would wake still believing in a 30 s lease
//! that the server let go half a minute ago, and a leader suspended inside its lease would
//! wake and answer a read from state that another leader has since changed.
//!
//! So every shell (the client, the single node, the cluster node) reads [`BootInstant`]:
//! `CLOCK_BOOTTIME` on Linux and Android (`CLOCK_MONOTONIC` plus the time spent suspended),
//! read through `rustix`'s safe `clock_gettime`. On other Unix systems it reads
//! `CLOCK_MONOTONIC`, which on macOS keeps counting through sleep (elsewhere a deployment must
//! check that its platform's does). The spec states the assumption for every implementation
//! (§6.4, "The clock").
//!
//! After a resume the clock has jumped forward by the time suspended: every lease counted
//! on it is seen as expired at once, which is the safe direction. The pure cores see that
//! jump as an ordinary large step of `now` (the simulator's clock-jump fault exercises it).
//!
//! Timed waits (`park_timeout`, socket receive timeouts) are still measured by the kernel on
//! its own clock and may wake late after a suspend; that costs only a late retransmission,
//! because every decision taken after waking reads this clock again.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time on the suspend-aware monotonic clock (see the module docs), in
/// nanoseconds since an unspecified start (the machine's boot on Linux). Comparable and
/// subtractable like `std::time::Instant`; meaningful only within one machine's uptime.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootInstant {
    nanos: u64,
}

impl BootInstant {
    /// The current time.
    pub fn now() -> BootInstant {
        BootInstant {
            nanos: read_nanos(),
        }
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: BootInstant) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }

    /// The same as [`BootInstant::saturating_duration_since`] (as `std`'s, which saturates
    /// since Rust 1.60).
    pub fn duration_since(self, earlier: BootInstant) -> Duration {
        self.saturating_duration_since(earlier)
    }

    /// Time elapsed since `self` (zero if `self` is in the future).
    pub fn elapsed(self) -> Duration {
        BootInstant::now().saturating_duration_since(self)
    }

    /// `self + duration`, or `None` past the clock's range (about 584 years of uptime).
    pub fn checked_add(self, duration: Duration) -> Option<BootInstant> {
        let add = u64::try_from(duration.as_nanos()).ok()?;
        Some(BootInstant {
            nanos: self.nanos.checked_add(add)?,
        })
    }

    /// `self - duration`, or `None` before the clock's start.
    pub fn checked_sub(self, duration: Duration) -> Option<BootInstant> {
        let sub = u64::try_from(duration.as_nanos()).ok()?;
        Some(BootInstant {
            nanos: self.nanos.checked_sub(sub)?,
        })
    }
}

impl Add<Duration> for BootInstant {
    type Output = BootInstant;

    /// Panics past the clock's range, like `std::time::Instant`.
    fn add(self, duration: Duration) -> BootInstant {
        self.checked_add(duration)
            .expect("BootInstant overflow: more than 584 years of uptime")
    }
}

impl Sub<Duration> for BootInstant {
    type Output = BootInstant;

    /// Saturates at the clock's start (a point before it was never observed anyway).
    fn sub(self, duration: Duration) -> BootInstant {
        self.checked_sub(duration)
            .unwrap_or(BootInstant { nanos: 0 })
    }
}

impl Sub<BootInstant> for BootInstant {
    type Output = Duration;

    /// Saturating, like `std::time::Instant` since Rust 1.60.
    fn sub(self, earlier: BootInstant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Debug for BootInstant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BootInstant({}.{:09}s)",
            self.nanos / 1_000_000_000,
            self.nanos % 1_000_000_000
        )
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const CLOCK: rustix::time::ClockId = rustix::time::ClockId::Boottime;

#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
const CLOCK: rustix::time::ClockId = rustix::time::ClockId::Monotonic;

#[cfg(unix)]
fn read_nanos() -> u64 {
    // Both clocks are always supported, so `clock_gettime` cannot fail; the values are
    // non-negative by definition.
    let now = rustix::time::clock_gettime(CLOCK);
    let secs = u64::try_from(now.tv_sec).expect("a monotonic clock is not negative");
    let nanos = u64::try_from(now.tv_nsec).expect("tv_nsec is within 0..1e9");
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

#[cfg(not(unix))]
fn read_nanos() -> u64 {
    // No suspend-aware clock is wired up here: `std`'s monotonic clock, from a process-wide
    // start. The spec's clock assumption is then the platform's to meet.
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards_and_arithmetic_round_trips() {
        let mut previous = BootInstant::now();
        for _ in 0..1_000 {
            let now = BootInstant::now();
            assert!(now >= previous);
            previous = now;
        }
        let t = BootInstant::now();
        let later = t + Duration::from_millis(1_500);
        assert_eq!(later - t, Duration::from_millis(1_500));
        assert_eq!(t - later, Duration::ZERO);
        assert_eq!(later - Duration::from_millis(1_500), t);
        assert_eq!(
            t.checked_add(Duration::from_secs(u64::MAX)),
            None,
            "overflow is reported, not wrapped"
        );
        assert_eq!(
            BootInstant { nanos: 5 } - Duration::from_secs(1),
            BootInstant { nanos: 0 }
        );
    }

    /// The clock counts at least as fast as `std`'s monotonic one: the two are read around
    /// a sleep, and the suspend-aware clock must not have seen less time pass. (Equal here,
    /// since the test machine does not suspend; a clock that stood still would fail.)
    #[test]
    fn advances_with_real_time() {
        let (boot, std) = (BootInstant::now(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let std_elapsed = std.elapsed();
        let boot_elapsed = boot.elapsed();
        // Read after `std`, so it saw at least as much time, up to the clocks' granularity.
        assert!(
            boot_elapsed + Duration::from_micros(1) >= std_elapsed,
            "boot clock {boot_elapsed:?} < std {std_elapsed:?}"
        );
        assert!(boot_elapsed >= Duration::from_millis(20));
    }

    /// On Linux the reading is CLOCK_BOOTTIME itself. This machine never suspends, so
    /// BOOTTIME and MONOTONIC read alike here and only the choice of clock can be checked;
    /// the simulator's `clock_stops_during_pauses` experiment shows what the other choice
    /// breaks.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn reads_boottime_on_linux() {
        assert_eq!(CLOCK, rustix::time::ClockId::Boottime);
        let nanos = |t: rustix::time::Timespec| {
            u64::try_from(t.tv_sec).unwrap() * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap()
        };
        let before = nanos(rustix::time::clock_gettime(rustix::time::ClockId::Boottime));
        let boot = BootInstant::now();
        let after = nanos(rustix::time::clock_gettime(rustix::time::ClockId::Boottime));
        assert!(before <= boot.nanos && boot.nanos <= after);
    }
}
