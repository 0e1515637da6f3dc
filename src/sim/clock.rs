//! The simulated clocks of nodes and clients: each runs at its own rate from its own offset,
//! and the faults may change that rate, stop it or make it jump.
//!
//! A clock is a line through one point: it read `base_local_us` at true time `base_true_us`
//! and runs at `1 + rate_ppm / 10^6` of true time from there (before the point too, when
//! asked about the past). A change of rate, a stall and a jump each move the point, so the
//! readings stay continuous across a change of rate, and never go back.
//!
//! # The drift bound
//!
//! The spec's one assumption about clocks (client protocol §6.4, "The clock") is on their
//! rates: two machines' clocks differ in rate by at most `drift_bound`. Every clock here runs
//! within ± half the bound of true time, so any two are within the bound of each other, and
//! its rate may step to any other rate within that at any moment ([`Clock::set_rate`]: NTP
//! slewing, a change of temperature). A clock that stands still ([`Clock::stand_still`]) or
//! jumps ([`Clock::jump`]) for a moment runs outside any rate bound: the faults do that only
//! in the experiments that show what breaks beyond the bound.

use crate::core::time::{Duration, Instant};

/// The rate of a clock is `PPM + rate_ppm` parts per million of true time.
const PPM: i64 = 1_000_000;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    /// Parts per million faster (or slower, below 0) than true time.
    rate_ppm: i64,
    /// True time and reading of the point the clock's line goes through (see the module doc).
    base_true_us: u64,
    base_local_us: u64,
}

impl Clock {
    /// A clock running `rate_ppm` from reading `offset_us` at true time 0.
    pub(crate) fn new(rate_ppm: i64, offset_us: u64) -> Clock {
        assert!(
            rate_ppm.abs() < PPM / 2,
            "a clock runs forward: {rate_ppm} ppm"
        );
        Clock {
            rate_ppm,
            base_true_us: 0,
            base_local_us: offset_us,
        }
    }

    pub(crate) fn rate_ppm(&self) -> i64 {
        self.rate_ppm
    }

    /// This clock's reading at true time `t`.
    pub(crate) fn local(&self, t: Instant) -> Instant {
        let elapsed = t.as_micros() as i64 - self.base_true_us as i64;
        let scaled = match elapsed.checked_mul(PPM + self.rate_ppm) {
            Some(product) => product.div_euclid(PPM),
            None => (i128::from(elapsed) * i128::from(PPM + self.rate_ppm)).div_euclid(PPM.into())
                as i64,
        };
        Instant::from_micros(self.base_local_us.saturating_add_signed(scaled))
    }

    /// The first true time at which this clock reads at least `local`.
    pub(crate) fn true_time(&self, local: Instant) -> Instant {
        if local == Instant::MAX {
            return Instant::MAX;
        }
        let ahead = local.as_micros() as i64 - self.base_local_us as i64;
        let rate = PPM + self.rate_ppm;
        // ceil(ahead · PPM / rate), for either sign of `ahead`.
        let elapsed = match ahead.checked_mul(PPM) {
            Some(product) => -(-product).div_euclid(rate),
            None => -(-i128::from(ahead) * i128::from(PPM)).div_euclid(rate.into()) as i64,
        };
        Instant::from_micros(self.base_true_us.saturating_add_signed(elapsed))
    }

    /// Moves the clock's point to true time `t`, reading `local` there.
    fn rebase(&mut self, t: Instant, local: Instant) {
        self.base_true_us = t.as_micros();
        self.base_local_us = local.as_micros();
    }

    /// From true time `now` on, the clock runs at `rate_ppm` (a step of its rate: its
    /// reading stays continuous).
    pub(crate) fn set_rate(&mut self, now: Instant, rate_ppm: i64) {
        assert!(
            rate_ppm.abs() < PPM / 2,
            "a clock runs forward: {rate_ppm} ppm"
        );
        let local = self.local(now);
        self.rebase(now, local);
        self.rate_ppm = rate_ppm;
    }

    /// The clock stood still from true time `from` to `to`: it resumes at `to` reading what
    /// it read at `from`. Beyond the drift bound.
    pub(crate) fn stand_still(&mut self, from: Instant, to: Instant) {
        let local = self.local(from);
        self.rebase(to, local);
    }

    /// At true time `now` the clock jumps forward by `by`. Beyond the drift bound.
    pub(crate) fn jump(&mut self, now: Instant, by: Duration) {
        let local = self.local(now) + by;
        self.rebase(now, local);
    }
}
