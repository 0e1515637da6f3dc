//! The simulated clocks of nodes and clients: each runs at its own rate from its own offset,
//! and the faults may change that rate, stop it or make it jump.
//!
//! A clock is a line from one point: it reads `base_local_us` at true time `base_true_us`
//! and runs at `1 + rate_ppm / 10^6` of true time from there; before the point (asked about
//! the past, or during a stall whose end is the point) it reads the point's reading. A change
//! of rate, a stall and a jump each move the point, so the readings never go back, and stay
//! continuous across a change of rate.
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

    /// This clock's reading at true time `t`.
    pub(crate) fn local(&self, t: Instant) -> Instant {
        let elapsed = t.as_micros().saturating_sub(self.base_true_us);
        let rate = (PPM + self.rate_ppm) as u64;
        let scaled = match elapsed.checked_mul(rate) {
            Some(product) => product / PPM as u64,
            None => (u128::from(elapsed) * u128::from(rate) / PPM as u128) as u64,
        };
        Instant::from_micros(self.base_local_us.saturating_add(scaled))
    }

    /// The first true time at which this clock reads at least `local`.
    pub(crate) fn true_time(&self, local: Instant) -> Instant {
        if local == Instant::MAX {
            return Instant::MAX;
        }
        // Up to the point, the clock reads the point's reading (see the module docs).
        let Some(ahead) = local.as_micros().checked_sub(self.base_local_us) else {
            return Instant::ZERO;
        };
        let rate = (PPM + self.rate_ppm) as u64;
        // ceil(ahead · PPM / rate)
        let elapsed = match ahead.checked_mul(PPM as u64) {
            Some(product) => product.div_ceil(rate),
            None => (u128::from(ahead) * PPM as u128).div_ceil(rate.into()) as u64,
        };
        Instant::from_micros(self.base_true_us.saturating_add(elapsed))
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

    /// The clock stands (or stood) still from true time `from` to `to`: it reads at `to`
    /// what it read at `from`, and in between too if `to` is still ahead. Beyond the drift
    /// bound.
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
