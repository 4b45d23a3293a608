//! The moments of a positive quantity on a log scale (latencies, times to first token),
//! kept as integers so that they add up exactly, in any order, across threads and
//! instances.

/// Fixed-point scale of the sums of logarithms: 10⁻⁶ resolution.
const SCALE: f64 = 1e6;

/// `ln(seconds)` and its square in fixed point.
pub fn log_fixed(seconds: f64) -> (i64, i64) {
    // Latencies under a microsecond are clock noise; clamp so that ln stays finite.
    let l = seconds.max(1e-6).ln();
    // Both are bounded (|ln| < 30 for any latency a request can have): no overflow.
    ((l * SCALE).round() as i64, (l * l * SCALE).round() as i64)
}

/// Count, Σ ln x and Σ (ln x)² of a positive quantity, in fixed point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogMoments {
    pub n: u64,
    sum: i64,
    sumsq: i64,
}

impl LogMoments {
    /// From a count and the sums of ln x and (ln x)² (e.g. added up across instances).
    pub fn from_sums(n: u64, sum: f64, sumsq: f64) -> Self {
        LogMoments { n, sum: (sum * SCALE).round() as i64, sumsq: (sumsq * SCALE).round() as i64 }
    }

    /// From a count and the fixed-point sums (as [`log_fixed`] makes them).
    pub fn from_fixed(n: u64, sum: i64, sumsq: i64) -> Self {
        LogMoments { n, sum, sumsq }
    }

    /// The count and the fixed-point sums (what adds up across instances).
    pub fn fixed(&self) -> (u64, i64, i64) {
        (self.n, self.sum, self.sumsq)
    }

    /// Both together.
    pub fn plus(&self, other: &Self) -> Self {
        LogMoments {
            n: self.n + other.n,
            sum: self.sum.wrapping_add(other.sum),
            sumsq: self.sumsq.wrapping_add(other.sumsq),
        }
    }

    /// The moments of what was added since `earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        LogMoments {
            n: self.n.saturating_sub(earlier.n),
            sum: self.sum.wrapping_sub(earlier.sum),
            sumsq: self.sumsq.wrapping_sub(earlier.sumsq),
        }
    }

    /// The mean of ln x, if there is a sample.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum as f64 / SCALE / self.n as f64)
    }

    /// The sample variance of ln x, if there are two samples.
    pub fn variance(&self) -> Option<f64> {
        if self.n < 2 {
            return None;
        }
        let n = self.n as f64;
        let mean = self.sum as f64 / SCALE / n;
        let ss = self.sumsq as f64 / SCALE - n * mean * mean;
        Some((ss / (n - 1.0)).max(0.0))
    }
}
