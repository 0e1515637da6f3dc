//! The A/B loop of the keys phases (peer keys, client keys): one uncontended acquire and
//! release on each of two services in turn, the order swapped every iteration, with a raw
//! round trip before each pair, so that both see the same machine at the same moments.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::Client;
use crate::error::LockError;

use super::report::{histogram, record};
use super::rtt::Echo;
use super::BenchConfig;

/// What [`alternate`] measured after its warm-up: the raw round trips, the acquires of the
/// first client and of the second, and how long that took.
pub(super) struct Alternated {
    pub rtt: Histogram<u64>,
    pub first: Histogram<u64>,
    pub second: Histogram<u64>,
    pub elapsed: Duration,
}

/// Runs `config.iterations` (after a tenth as many, at least 100, of warm-up) of: a raw round
/// trip through `echo`, then `first` and `second` each acquire and release one of 1,024
/// resources as `client_id`, in turn (first first on even iterations, second first on odd).
pub(super) fn alternate(
    config: &BenchConfig,
    first: &Client,
    second: &Client,
    echo: &Echo,
    client_id: &str,
) -> Result<Alternated, LockError> {
    let names: Vec<String> = (0..1_024).map(|i| format!("bench/keys/{i}")).collect();
    let (mut rtt, mut with, mut without) = (histogram(), histogram(), histogram());
    let warmup = (config.iterations / 10).max(100);
    let mut started = Instant::now();
    let pair = |client: &Client, name: &str| -> Result<Duration, LockError> {
        let t0 = Instant::now();
        client.acquire(name, client_id, 1_000, Some(10_000))?;
        let acquired = t0.elapsed();
        client.release(name, client_id)?;
        Ok(acquired)
    };
    for i in 0..config.iterations + warmup {
        if i == warmup {
            started = Instant::now();
        }
        let round_trip = echo.round_trip();
        let name = &names[i as usize % names.len()];
        let (a, b) = if i % 2 == 0 {
            let a = pair(first, name)?;
            (a, pair(second, name)?)
        } else {
            let b = pair(second, name)?;
            (pair(first, name)?, b)
        };
        if i >= warmup {
            if let Some(d) = round_trip {
                record(&mut rtt, d);
            }
            record(&mut with, a);
            record(&mut without, b);
        }
    }
    Ok(Alternated {
        rtt,
        first: with,
        second: without,
        elapsed: started.elapsed(),
    })
}
