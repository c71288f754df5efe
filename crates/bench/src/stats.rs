//! Medians over repeated runs, and latency percentiles from a sorted list of nanoseconds.
//!
//! Throughput and time figures are `f64` (they are rates, never money).

use std::time::Duration;

/// The median, minimum and maximum of one figure over the repeated runs of a case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// `values` must not be empty. With an even count the median is the mean of the two middle
    /// values.
    pub fn of(values: &[f64]) -> Summary {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return Summary { median: f64::NAN, min: f64::NAN, max: f64::NAN };
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        Summary { median, min: sorted[0], max: sorted[n - 1] }
    }
}

/// Latency percentiles of one run, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles; `None` for an empty list.
    pub fn of(mut nanos: Vec<u64>) -> Option<Percentiles> {
        if nanos.is_empty() {
            return None;
        }
        nanos.sort_unstable();
        Some(Percentiles {
            count: nanos.len(),
            p50: rank(&nanos, 500),
            p99: rank(&nanos, 990),
            p999: rank(&nanos, 999),
            max: nanos[nanos.len() - 1],
        })
    }
}

/// The value at `per_mille`/1000 by nearest rank: the smallest value with at least that share
/// of the values at or below it.
fn rank(sorted: &[u64], per_mille: usize) -> u64 {
    let n = sorted.len();
    let index = (n * per_mille).div_ceil(1000).clamp(1, n) - 1;
    sorted[index]
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[allow(clippy::cast_precision_loss)]
pub fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

/// Items per second.
#[allow(clippy::cast_precision_loss)]
pub fn rate(items: u64, elapsed: Duration) -> f64 {
    items as f64 / elapsed.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]), Summary { median: 2.0, min: 1.0, max: 3.0 });
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }

    #[test]
    fn nearest_rank() {
        let p = Percentiles::of((1..=1000).collect()).unwrap_or_else(|| unreachable!());
        assert_eq!((p.p50, p.p99, p.p999, p.max), (500, 990, 999, 1000));
        let one = Percentiles::of(vec![7]).unwrap_or_else(|| unreachable!());
        assert_eq!((one.p50, one.p99), (7, 7));
    }
}
