//! The client's retransmission brain: RTT estimation, retransmission timeouts and the send
//! times a lease is counted from (spec "Client obligations").
//!
//! Pure like every core: no IO, no clock, no randomness. The client shell passes `now` in and
//! asks two questions of it: *when must I retransmit?* ([`RequestTimer::next_retransmit`]) and
//! *what does this reply tell me?* ([`RequestTimer::rtt_sample`], [`RequestTimer::lease_start`]).
//!
//! Data flow for one request:
//!
//! ```text
//!  RttEstimator::timer() ──> RequestTimer ── on_send(now) ──> attempt number for the header
//!        ^                        │  next_retransmit() ──> when the shell wakes up to resend
//!        │                        │
//!        └── on_sample(rtt) <── rtt_sample(echoed attempt, QUEUED?, now)   (one per reply)
//!                                 lease_start(echoed attempt) ──> start of the client's lease
//! ```
//!
//! The estimator follows RFC 6298 with the constants scaled from Internet paths down to a
//! data-centre network: an initial RTO of 1 ms instead of 1 s, a clock granularity / floor G of
//! 200 µs instead of 1 s, and a ceiling of 100 ms. Because every reply echoes the highest
//! attempt the server had received, an RTT sample is never ambiguous, so unlike Karn's
//! algorithm (RFC 6298 §3) a retransmitted request still yields samples — only replies to an
//! older attempt, or replies that waited in the server's queue (QUEUED), are skipped.

use core::fmt;

use super::time::{Duration, Instant};

/// How many recent attempts a [`RequestTimer`] remembers the send time of. A reply echoes the
/// highest attempt the server had received; replies echoing an attempt older than this window
/// fall back to the first send time, which is earlier and therefore safe for the lease.
pub const SEND_HISTORY_LEN: usize = 8;

/// A client MUST NOT retransmit a request more than `request_lifetime_ms_max` (360 000 ms)
/// after its first send: after that the server may have forgotten the session and would
/// execute the copy as a new operation.
pub const REQUEST_LIFETIME_MAX: Duration =
    Duration::from_millis(udplock_protocol::REQUEST_LIFETIME_MS_MAX as u64);

/// The longest the protocol assumes a datagram can stay in the network (spec §7.1.5, §12).
pub const NETWORK_DELAY_MAX: Duration = Duration::from_millis(60_000);

/// `DOUBT_LIFETIME_MS` (spec §7.1.5): no copy of a request is sent later than
/// [`REQUEST_LIFETIME_MAX`] after its first, and none is delivered more than
/// [`NETWORK_DELAY_MAX`] after it was sent, so after this long since its first copy no copy of
/// a request can take effect: a RELEASE with an unknown outcome is settled by then.
pub const DOUBT_LIFETIME: Duration =
    Duration::from_micros(REQUEST_LIFETIME_MAX.as_micros() + NETWORK_DELAY_MAX.as_micros());

/// NOT_LEADER hints a request follows at once (spec §7.1.7 rule 5.1, `REDIRECTS_FAST_MAX`)
/// between two replies of another kind; later ones wait for the request's retransmission
/// timer. A healthy cluster needs one hop (two while a new leader's hint spreads); two
/// confused nodes naming each other must not make a client send as fast as the loop turns.
pub const REDIRECTS_FAST_MAX: u32 = 3;

/// Unanswered copies in a row after which a request leaves a node and marks it suspect (spec
/// §7.1.7 rule 4, `SILENT_SENDS_MAX`): the node (perhaps the shard's leader) may be dead. Two,
/// so that a single lost datagram does not send a request away from a live leader. A node
/// that is already suspect is left after one.
pub const SILENT_SENDS_MAX: u32 = 2;

/// Largest RTO ceiling [`RetransmitConfig::validate`] accepts. RFC 6298 §2.5 lets an
/// implementation cap the RTO provided the cap is at least 60 s; a lock client would rather
/// give up at its deadline than wait longer than that between two copies.
pub const RTO_MAX_LIMIT: Duration = Duration::from_millis(60_000);

/// Samples above this are clamped before they enter the estimator, so the scaled arithmetic
/// below can never overflow. A round trip longer than a request may live means nothing.
const SAMPLE_MAX: Duration = REQUEST_LIFETIME_MAX;

/// Retransmission timer settings (spec "Client obligations").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitConfig {
    /// RTO before the first RTT sample (RFC 6298 §2.1 uses 1 s for the Internet; one
    /// millisecond is already dozens of round trips on a LAN). Default 1 ms.
    pub rto_initial: Duration,
    /// The clock granularity G of RFC 6298 §2 *and* the floor of every RTO (§2.4 rounds up to
    /// 1 s; here 200 µs). On a quiet loopback RTTVAR falls to almost zero, and without a
    /// floor the client would retransmit on every scheduler hiccup. Default 200 µs.
    pub rto_min: Duration,
    /// Ceiling of the RTO, also after exponential backoff (RFC 6298 §2.5 permits one). A
    /// queued ACQUIRE is retransmitted at this period while it waits. Default 100 ms.
    pub rto_max: Duration,
}

impl Default for RetransmitConfig {
    fn default() -> Self {
        RetransmitConfig {
            rto_initial: Duration::from_millis(1),
            rto_min: Duration::from_micros(200),
            rto_max: Duration::from_millis(100),
        }
    }
}

/// Why a [`RetransmitConfig`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidRetransmitConfig(pub &'static str);

impl fmt::Display for InvalidRetransmitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl RetransmitConfig {
    /// Refuses timer combinations that cannot work: a zero floor (a retransmission storm),
    /// an initial RTO outside `[rto_min, rto_max]`, or a ceiling above [`RTO_MAX_LIMIT`].
    pub fn validate(&self) -> Result<(), InvalidRetransmitConfig> {
        if self.rto_min == Duration::ZERO {
            return Err(InvalidRetransmitConfig(
                "rto_min must be at least 1 us: it is the floor of every retransmission timeout",
            ));
        }
        if self.rto_min > self.rto_max {
            return Err(InvalidRetransmitConfig("rto_min must not exceed rto_max"));
        }
        if self.rto_initial < self.rto_min || self.rto_initial > self.rto_max {
            return Err(InvalidRetransmitConfig(
                "rto_initial must lie between rto_min and rto_max",
            ));
        }
        if self.rto_max > RTO_MAX_LIMIT {
            return Err(InvalidRetransmitConfig("rto_max must be at most 60 s"));
        }
        Ok(())
    }
}

/// Smoothed RTT estimator of RFC 6298 §2, in integer microseconds.
///
/// SRTT is kept multiplied by 8 and RTTVAR by 4 (as the BSD and Linux TCP stacks do), so the
/// 1/8 and 1/4 gains lose no precision to integer division at microsecond round trips.
#[derive(Clone, Debug)]
pub struct RttEstimator {
    config: RetransmitConfig,
    /// 8 × SRTT in µs; meaningless while `samples == 0`.
    srtt_x8_us: u64,
    /// 4 × RTTVAR in µs; meaningless while `samples == 0`.
    rttvar_x4_us: u64,
    /// Samples taken so far (saturating).
    samples: u64,
}

impl RttEstimator {
    /// An estimator with no sample yet: [`RttEstimator::rto`] is `config.rto_initial`.
    pub fn new(config: RetransmitConfig) -> RttEstimator {
        RttEstimator {
            config,
            srtt_x8_us: 0,
            rttvar_x4_us: 0,
            samples: 0,
        }
    }

    pub fn config(&self) -> &RetransmitConfig {
        &self.config
    }

    /// Takes one RTT measurement R (RFC 6298 §2.2 for the first, §2.3 for later ones).
    pub fn on_sample(&mut self, rtt: Duration) {
        let r = rtt.min(SAMPLE_MAX).as_micros();
        if self.samples == 0 {
            // RFC 6298 §2.2: SRTT <- R, RTTVAR <- R/2.
            self.srtt_x8_us = 8 * r;
            self.rttvar_x4_us = 2 * r;
        } else {
            // RFC 6298 §2.3, RTTVAR first (it uses the old SRTT):
            //   RTTVAR <- (1 - 1/4) * RTTVAR + 1/4 * |SRTT - R|
            //   SRTT   <- (1 - 1/8) * SRTT   + 1/8 * R
            // In the scaled units: 4*RTTVAR' = 4*RTTVAR - RTTVAR + |8*SRTT - 8*R| / 8
            //                      8*SRTT'   = 8*SRTT   - SRTT   + R
            let err = self.srtt_x8_us.abs_diff(8 * r) / 8;
            self.rttvar_x4_us = self.rttvar_x4_us - self.rttvar_x4_us / 4 + err;
            self.srtt_x8_us = self.srtt_x8_us - self.srtt_x8_us / 8 + r;
        }
        self.samples = self.samples.saturating_add(1);
        debug_assert!(self.srtt_x8_us <= 8 * SAMPLE_MAX.as_micros());
    }

    /// The retransmission timeout for a new request:
    /// `clamp(SRTT + max(G, 4 * RTTVAR), rto_min, rto_max)` (RFC 6298 §2.2/§2.3, with the
    /// floor of §2.4 and the ceiling of §2.5), or `rto_initial` before any sample (§2.1).
    pub fn rto(&self) -> Duration {
        if self.samples == 0 {
            return self.config.rto_initial;
        }
        let g = self.config.rto_min.as_micros();
        let rto = self.srtt_x8_us / 8 + g.max(self.rttvar_x4_us);
        let rto = Duration::from_micros(rto);
        let rto = rto.max(self.config.rto_min).min(self.config.rto_max);
        debug_assert!(rto >= self.config.rto_min && rto <= self.config.rto_max);
        rto
    }

    /// SRTT, once there is a sample.
    pub fn srtt(&self) -> Option<Duration> {
        (self.samples > 0).then(|| Duration::from_micros(self.srtt_x8_us / 8))
    }

    /// RTTVAR, once there is a sample.
    pub fn rttvar(&self) -> Option<Duration> {
        (self.samples > 0).then(|| Duration::from_micros(self.rttvar_x4_us / 4))
    }

    /// How many samples the estimator has taken.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// A timer for a new request, starting from the current RTO.
    pub fn timer(&self) -> RequestTimer {
        RequestTimer::new(self.rto(), self.config.rto_max)
    }
}

/// The timer of one outstanding request: when it was sent, attempt by attempt, and when it is
/// due for a retransmission.
///
/// Attempt numbers count sends: 0 for the first, +1 per retransmission, saturating at
/// `u16::MAX` as the wire field does. Once saturated, every further copy carries 65535; the
/// timer then keeps the send time of the *first* copy with that number (the earliest, so a
/// lease counted from it is safe) and refuses RTT samples from it (they are ambiguous).
#[derive(Clone, Debug)]
pub struct RequestTimer {
    /// RTO when the request was created; attempt k waits `base_rto * 2^k`, capped.
    base_rto: Duration,
    rto_max: Duration,
    /// Send time of attempt `a` at index `a % SEND_HISTORY_LEN`, for the latest attempts.
    sent_at: [Instant; SEND_HISTORY_LEN],
    /// Copies sent so far (saturating).
    sends: u32,
    first_send: Instant,
    last_send: Instant,
    /// Set once the server answered WAITING (spec §7.1.3): the request is known to be queued,
    /// so copies become keepalives at this fixed interval instead of backing off.
    keepalive: Option<Duration>,
    /// Copies sent before the timer was last resumed ([`RequestTimer::resume`]).
    backoff_from: u32,
}

/// A queued acquire's keepalive interval is its lease divided by this: a keepalive refreshes
/// the send time the client counts its lease from, so a grant can cost the client at most
/// about 1/16 (6 %) of its lease.
pub const KEEPALIVE_LEASE_DIVISOR: u64 = 16;

/// Shortest keepalive interval: a short lease must not turn a queued acquire into a flood.
pub const KEEPALIVE_MIN: Duration = Duration::from_micros(1_000);

impl RequestTimer {
    /// A timer whose first send waits `rto` (clamped to `1 µs..=rto_max`) before the first
    /// retransmission.
    pub fn new(rto: Duration, rto_max: Duration) -> RequestTimer {
        let rto_max = rto_max.max(Duration::from_micros(1));
        RequestTimer {
            base_rto: rto.max(Duration::from_micros(1)).min(rto_max),
            rto_max,
            sent_at: [Instant::ZERO; SEND_HISTORY_LEN],
            sends: 0,
            first_send: Instant::ZERO,
            last_send: Instant::ZERO,
            keepalive: None,
            backoff_from: 0,
        }
    }

    /// The server answered WAITING with this `lease_ms` (the TTL the grant would get): from
    /// now on, copies are keepalives every `lease / KEEPALIVE_LEASE_DIVISOR`, at least
    /// [`KEEPALIVE_MIN`] and at most the RTO ceiling.
    pub fn on_waiting(&mut self, lease_ms: u32) {
        let interval = Duration::from_micros(
            Duration::from_millis(lease_ms.into()).as_micros() / KEEPALIVE_LEASE_DIVISOR,
        );
        self.keepalive = Some(interval.max(KEEPALIVE_MIN).min(self.rto_max));
    }

    /// The request is sent again after it was abandoned (a doubtful RELEASE settled before a
    /// later call, spec §7.1.5): attempt numbers and send times go on from where they were,
    /// but the timer starts afresh from `rto`, the estimator's current value, as for a new
    /// request. Nothing else restarts a back-off: moving to another node does not (§7.1.3).
    pub fn resume(&mut self, rto: Duration) {
        self.base_rto = rto.max(Duration::from_micros(1)).min(self.rto_max);
        self.backoff_from = self.sends;
        self.keepalive = None;
    }

    /// True once the server said the request waits in its queue.
    pub fn is_waiting(&self) -> bool {
        self.keepalive.is_some()
    }

    /// Records a copy sent at `now` and returns the attempt number it must carry.
    /// Call it *before* handing the datagram to the socket: the lease is counted from this
    /// instant, and it must not be later than the real send.
    pub fn on_send(&mut self, now: Instant) -> u16 {
        // The shell's clock is monotonic; a caller going backwards is tolerated by treating
        // the copy as sent at the previous instant (never moves a send time later).
        debug_assert!(self.sends == 0 || now >= self.last_send);
        let now = if self.sends == 0 {
            now
        } else {
            now.max(self.last_send)
        };
        let attempt = self.sends.min(u32::from(u16::MAX)) as u16;
        // Below the saturation point every attempt is new; at it, only the first copy
        // numbered 65535 is recorded (see the type's docs).
        if self.sends <= u32::from(u16::MAX) {
            self.sent_at[usize::from(attempt) % SEND_HISTORY_LEN] = now;
        }
        if self.sends == 0 {
            self.first_send = now;
        }
        self.last_send = now;
        self.sends = self.sends.saturating_add(1);
        debug_assert!(self.latest_attempt() == Some(attempt));
        attempt
    }

    /// Records a copy sent at `now` because the previous one was answered at once with a
    /// request to send it again (RETRY, spec §7.1.9), and returns its attempt number. The
    /// previous copy was not lost: this one does not double the timer (RFC 6298 §5.5 backs
    /// off for losses only).
    pub fn on_send_at_once(&mut self, now: Instant) -> u16 {
        let retransmits_before = self
            .sends
            .saturating_sub(1)
            .saturating_sub(self.backoff_from);
        let attempt = self.on_send(now);
        if self.sends > 1 {
            self.backoff_from = self.backoff_from.saturating_add(1);
        }
        debug_assert_eq!(
            self.sends
                .saturating_sub(1)
                .saturating_sub(self.backoff_from),
            retransmits_before
        );
        attempt
    }

    /// Copies sent so far.
    pub fn sends(&self) -> u32 {
        self.sends
    }

    /// The attempt number of the latest copy, `None` before the first send.
    pub fn latest_attempt(&self) -> Option<u16> {
        self.sends
            .checked_sub(1)
            .map(|n| n.min(u32::from(u16::MAX)) as u16)
    }

    /// Send time of the first copy, `None` before the first send.
    pub fn first_send(&self) -> Option<Instant> {
        (self.sends > 0).then_some(self.first_send)
    }

    /// The timeout armed after the latest send: the base RTO doubled once per retransmission
    /// already made (RFC 6298 §5.5), never above the ceiling (§2.5).
    pub fn current_rto(&self) -> Duration {
        if let Some(keepalive) = self.keepalive {
            return keepalive;
        }
        let retransmits = self
            .sends
            .saturating_sub(1)
            .saturating_sub(self.backoff_from);
        let factor = 1u64.checked_shl(retransmits).unwrap_or(u64::MAX);
        let rto = self.base_rto.as_micros().saturating_mul(factor);
        Duration::from_micros(rto).min(self.rto_max)
    }

    /// When the next copy is due: now ([`Instant::ZERO`]) before the first send, the latest
    /// send plus [`RequestTimer::current_rto`] after it, or [`Instant::MAX`] ("never") when
    /// that would fall after [`REQUEST_LIFETIME_MAX`] from the first send.
    pub fn next_retransmit(&self) -> Instant {
        if self.sends == 0 {
            return Instant::ZERO;
        }
        let due = self.last_send + self.current_rto();
        if due > self.first_send + REQUEST_LIFETIME_MAX {
            Instant::MAX
        } else {
            due
        }
    }

    /// When the copy numbered `attempt` was sent, if it was and is still remembered.
    pub fn send_time(&self, attempt: u16) -> Option<Instant> {
        let latest = self.latest_attempt()?;
        if attempt > latest || usize::from(latest - attempt) >= SEND_HISTORY_LEN {
            return None;
        }
        Some(self.sent_at[usize::from(attempt) % SEND_HISTORY_LEN])
    }

    /// The instant the client counts a granted lease from, for a reply echoing `echoed`:
    /// the send time of that attempt (spec "Lease rule"). The server granted after it
    /// received that copy, so the client's lease starts first. An attempt no longer
    /// remembered, or one never sent (a faulty server), falls back to the first send: earlier
    /// than any copy, so still safe. `None` before the first send.
    pub fn lease_start(&self, echoed: u16) -> Option<Instant> {
        let first = self.first_send()?;
        let start = self.send_time(echoed).unwrap_or(first);
        debug_assert!(start >= first && start <= self.last_send);
        Some(start)
    }

    /// An RTT sample from a reply received at `now` echoing `echoed`, or `None` when the
    /// reply does not measure a round trip: it answers an older copy than the latest (the
    /// spec's unambiguous alternative to Karn's algorithm, RFC 6298 §3), it carries QUEUED
    /// (it waited in the server's queue), or several copies share the saturated number 65535.
    pub fn rtt_sample(&self, echoed: u16, queued: bool, now: Instant) -> Option<Duration> {
        if queued || self.sends > u32::from(u16::MAX) + 1 {
            return None;
        }
        if self.latest_attempt()? != echoed {
            return None;
        }
        let sent = self.send_time(echoed)?;
        Some(now.saturating_since(sent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn at(n: u64) -> Instant {
        Instant::from_micros(n)
    }

    #[test]
    fn default_config_is_valid_and_bad_ones_are_refused() {
        let ok = RetransmitConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let bad = [
            RetransmitConfig {
                rto_min: Duration::ZERO,
                ..ok
            },
            RetransmitConfig {
                rto_initial: us(100),
                ..ok
            },
            RetransmitConfig {
                rto_initial: Duration::from_millis(200),
                ..ok
            },
            RetransmitConfig {
                rto_min: Duration::from_millis(200),
                ..ok
            },
            RetransmitConfig {
                rto_max: Duration::from_millis(61_000),
                ..ok
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    #[test]
    fn rto_initial_before_any_sample() {
        let est = RttEstimator::new(RetransmitConfig::default());
        assert_eq!(est.rto(), Duration::from_millis(1));
        assert_eq!(est.srtt(), None);
        assert_eq!(est.rttvar(), None);
    }

    #[test]
    fn rfc6298_arithmetic_on_known_samples() {
        let mut est = RttEstimator::new(RetransmitConfig::default());
        // §2.2: SRTT = R = 1000, RTTVAR = 500, RTO = 1000 + max(200, 2000) = 3000.
        est.on_sample(us(1_000));
        assert_eq!(est.srtt(), Some(us(1_000)));
        assert_eq!(est.rttvar(), Some(us(500)));
        assert_eq!(est.rto(), us(3_000));
        // §2.3 with R' = 2000: RTTVAR = 3/4*500 + 1/4*|1000-2000| = 625,
        // SRTT = 7/8*1000 + 1/8*2000 = 1125, RTO = 1125 + 4*625 = 3625.
        est.on_sample(us(2_000));
        assert_eq!(est.rttvar(), Some(us(625)));
        assert_eq!(est.srtt(), Some(us(1_125)));
        assert_eq!(est.rto(), us(3_625));
        // R' = 1125 (equal to SRTT): RTTVAR = 3/4*625 = 468.75, SRTT unchanged.
        est.on_sample(us(1_125));
        assert_eq!(est.srtt(), Some(us(1_125)));
        assert_eq!(est.rto(), us(1_125 + 1_875)); // 4*RTTVAR = 1875 exactly in scaled form
        assert_eq!(est.samples(), 3);
    }

    #[test]
    fn steady_samples_converge_and_g_dominates() {
        let mut est = RttEstimator::new(RetransmitConfig::default());
        for _ in 0..200 {
            est.on_sample(us(30));
        }
        assert_eq!(est.srtt(), Some(us(30)));
        assert_eq!(est.rttvar(), Some(Duration::ZERO));
        // RTTVAR is 0, so G = rto_min decides: 30 + 200.
        assert_eq!(est.rto(), us(230));
    }

    #[test]
    fn rto_is_clamped_to_floor_and_ceiling() {
        let config = RetransmitConfig::default();
        let mut est = RttEstimator::new(config);
        for _ in 0..100 {
            est.on_sample(Duration::ZERO);
        }
        assert_eq!(est.rto(), config.rto_min);

        let mut est = RttEstimator::new(config);
        est.on_sample(Duration::from_millis(1_000));
        assert_eq!(est.rto(), config.rto_max);

        // Absurd samples are clamped, not overflowed.
        let mut est = RttEstimator::new(config);
        est.on_sample(Duration::from_micros(u64::MAX));
        est.on_sample(Duration::from_micros(u64::MAX));
        assert_eq!(est.rto(), config.rto_max);
    }

    #[test]
    fn backoff_doubles_per_retransmit_and_is_capped() {
        let mut timer = RequestTimer::new(Duration::from_millis(1), Duration::from_millis(100));
        assert_eq!(timer.next_retransmit(), Instant::ZERO);
        let mut now = at(10_000);
        let mut expected = Vec::new();
        for attempt in 0..12u16 {
            assert_eq!(timer.on_send(now), attempt);
            let rto = timer.current_rto();
            expected.push(rto.as_micros());
            assert_eq!(timer.next_retransmit(), now + rto);
            now = timer.next_retransmit();
        }
        assert_eq!(
            expected,
            [
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 100_000, 100_000, 100_000,
                100_000, 100_000
            ]
        );
    }

    #[test]
    fn no_retransmit_after_the_request_lifetime() {
        let mut timer = RequestTimer::new(Duration::from_millis(100), Duration::from_millis(100));
        timer.on_send(Instant::ZERO);
        let mut now = Instant::ZERO;
        let mut sends = 1;
        while timer.next_retransmit() != Instant::MAX {
            now = timer.next_retransmit();
            timer.on_send(now);
            sends += 1;
        }
        assert!(now <= Instant::ZERO + REQUEST_LIFETIME_MAX);
        assert_eq!(sends, 3_601);
    }

    #[test]
    fn send_times_remember_the_latest_attempts() {
        let mut timer = RequestTimer::new(us(100), us(100));
        assert_eq!(timer.send_time(0), None);
        assert_eq!(timer.lease_start(0), None);
        for i in 0..20u64 {
            timer.on_send(at(1_000 * (i + 1)));
        }
        assert_eq!(timer.latest_attempt(), Some(19));
        assert_eq!(timer.send_time(19), Some(at(20_000)));
        assert_eq!(timer.send_time(12), Some(at(13_000)));
        assert_eq!(timer.send_time(11), None, "outside the history window");
        assert_eq!(timer.send_time(20), None, "never sent");
        // The lease falls back to the first send, which is earlier and therefore safe.
        assert_eq!(timer.lease_start(3), Some(at(1_000)));
        assert_eq!(timer.lease_start(500), Some(at(1_000)));
        assert_eq!(timer.lease_start(15), Some(at(16_000)));
    }

    #[test]
    fn rtt_sample_only_from_the_latest_unqueued_attempt() {
        let mut timer = RequestTimer::new(us(1_000), us(100_000));
        timer.on_send(at(0));
        timer.on_send(at(1_000));
        timer.on_send(at(3_000));
        let now = at(3_050);
        assert_eq!(timer.rtt_sample(2, false, now), Some(us(50)));
        assert_eq!(timer.rtt_sample(1, false, now), None, "stale attempt");
        assert_eq!(timer.rtt_sample(0, false, now), None, "stale attempt");
        assert_eq!(timer.rtt_sample(2, true, now), None, "QUEUED reply");
        assert_eq!(timer.rtt_sample(3, false, now), None, "never sent");
        let fresh = RequestTimer::new(us(1_000), us(100_000));
        assert_eq!(fresh.rtt_sample(0, false, now), None);
    }

    #[test]
    fn attempt_numbers_saturate_at_u16_max() {
        let mut timer = RequestTimer::new(us(1), us(1));
        for i in 0..=u64::from(u16::MAX) {
            assert_eq!(u64::from(timer.on_send(at(i * 10))), i);
        }
        // The first copy numbered 65535 was sent at 655350; the next ones reuse the number.
        assert_eq!(timer.rtt_sample(u16::MAX, false, at(655_360)), Some(us(10)));
        assert_eq!(timer.on_send(at(700_000)), u16::MAX);
        assert_eq!(timer.on_send(at(800_000)), u16::MAX);
        assert_eq!(timer.latest_attempt(), Some(u16::MAX));
        assert_eq!(timer.send_time(u16::MAX), Some(at(655_350)));
        assert_eq!(timer.send_time(u16::MAX - 1), Some(at(655_340)));
        assert_eq!(
            timer.rtt_sample(u16::MAX, false, at(800_010)),
            None,
            "ambiguous"
        );
        assert_eq!(timer.lease_start(u16::MAX), Some(at(655_350)));
    }

    #[test]
    fn waiting_turns_retransmits_into_paced_keepalives() {
        let mut t = RequestTimer::new(us(200), us(100_000));
        t.on_send(at(0));
        t.on_send(at(200));
        assert_eq!(t.current_rto(), us(400));
        t.on_waiting(5_000); // 5 s lease: 312.5 ms, capped at the 100 ms ceiling
        assert!(t.is_waiting());
        assert_eq!(t.next_retransmit(), at(200) + us(100_000));
        t.on_send(at(100_200));
        assert_eq!(t.current_rto(), us(100_000), "keepalives do not back off");
        t.on_waiting(160); // a 160 ms lease: every 10 ms
        assert_eq!(t.current_rto(), us(10_000));
        t.on_waiting(1); // never faster than KEEPALIVE_MIN
        assert_eq!(t.current_rto(), KEEPALIVE_MIN);
    }

    #[test]
    fn timer_starts_from_the_estimators_rto() {
        let mut est = RttEstimator::new(RetransmitConfig::default());
        est.on_sample(us(1_000));
        let mut timer = est.timer();
        timer.on_send(at(0));
        assert_eq!(timer.next_retransmit(), at(3_000));
    }
}

#[cfg(test)]
mod resume_tests {
    use super::*;

    /// A request sent again later (spec §7.1.5) goes on numbering its copies where it left
    /// off, with a fresh back-off from the RTO of the time, and forgets an old keepalive.
    #[test]
    fn a_resumed_request_continues_its_attempts_with_a_fresh_backoff() {
        let base = Duration::from_micros(1_000);
        let mut timer = RequestTimer::new(base, Duration::from_micros(100_000));
        let mut now = Instant::from_micros(10);
        for _ in 0..5 {
            timer.on_send(now);
            now = timer.next_retransmit();
        }
        timer.on_waiting(1_600);
        assert_eq!(timer.current_rto(), Duration::from_micros(100_000));
        let first = timer.first_send();
        timer.resume(Duration::from_micros(300));
        assert!(!timer.is_waiting());
        assert_eq!(timer.on_send(now), 5, "the next attempt number");
        assert_eq!(timer.current_rto(), Duration::from_micros(300));
        assert_eq!(timer.on_send(timer.next_retransmit()), 6);
        assert_eq!(timer.current_rto(), Duration::from_micros(600));
        assert_eq!(
            timer.first_send(),
            first,
            "the lifetime still counts from the first copy"
        );
        assert_eq!(
            timer.send_time(0),
            Some(Instant::from_micros(10)),
            "send times are kept"
        );
    }
}
