//! Guard statistics: per (flag, variation) additive counters that the guard task reads in
//! windows — the difference of two [`GuardSnapshot`]s. Sums of logarithms are kept in
//! fixed point so that every update is one `fetch_add` (no lock, no compare-and-swap loop),
//! is exact, and sums across gateway instances.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use crate::stats::log_fixed;
pub use crate::stats::LogMoments;

use super::Finished;
use super::Outcome;

/// Latency buckets: bucket `i` holds latencies in [2^(i/4), 2^((i+1)/4)) ms (about 19 %
/// wide); the first also holds everything under 1 ms and the last everything above.
pub const LATENCY_BUCKETS: usize = 80;

/// The bucket of a latency.
pub fn latency_bucket(seconds: f64) -> usize {
    let ms = seconds * 1000.0;
    if ms.is_nan() || ms < 1.0 {
        return 0;
    }
    // Truncation is the intent: the floor of a finite, non-negative value.
    ((4.0 * ms.log2()) as usize).min(LATENCY_BUCKETS - 1)
}

/// The lower bound of bucket `i`, in seconds.
pub fn bucket_lower_bound(i: usize) -> f64 {
    if i == 0 {
        0.0
    } else {
        2f64.powf(i as f64 / 4.0) / 1000.0
    }
}

/// Additive statistics of one (flag, variation).
#[derive(Debug)]
pub struct GuardStats {
    requests: AtomicU64,
    /// Upstream errors, timeouts and gateway errors.
    errors: AtomicU64,
    client_errors: AtomicU64,
    cancelled: AtomicU64,
    /// Requests that named no context: they bucket by a random key.
    random_context: AtomicU64,
    /// Successful requests: count, Σ ln(latency s), Σ ln² (fixed point).
    latency_n: AtomicU64,
    latency_sum: AtomicI64,
    latency_sumsq: AtomicI64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS],
    /// Streams with a first token: count, Σ ln(ttft s), Σ ln².
    ttft_n: AtomicU64,
    ttft_sum: AtomicI64,
    ttft_sumsq: AtomicI64,
    /// Requests with usage: count, Σ input, Σ output, Σ output².
    usage_n: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    output_tokens_sumsq: AtomicU64,
    /// Priced requests: their cost in dollars.
    cost: ValueStats,
    /// App-reported metrics, by key (each variant's handles are resolved when a snapshot
    /// is built; this map is read only then and by the guard task).
    signals: Mutex<BTreeMap<String, Arc<ValueStats>>>,
}

/// A signal's type as its counters keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// Values 0 or 1: `sum` counts the ones.
    Boolean,
    Numeric,
}

/// Count, Σx and Σx² of one quantity, each one atomic add (the sums are `f64` bits
/// updated by compare-and-swap: values are the app's, of any scale, so no fixed point fits).
#[derive(Debug)]
pub struct ValueStats {
    pub kind: SignalKind,
    /// Whether higher values are better (a guard's default direction).
    pub higher_is_better: bool,
    n: AtomicU64,
    sum: AtomicU64,
    sumsq: AtomicU64,
}

fn add_f64(a: &AtomicU64, x: f64) {
    let _ = a.fetch_update(Relaxed, Relaxed, |bits| Some((f64::from_bits(bits) + x).to_bits()));
}

impl ValueStats {
    pub fn new(kind: SignalKind, higher_is_better: bool) -> Self {
        ValueStats {
            kind,
            higher_is_better,
            n: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
            sumsq: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Add one value (finite: callers check).
    pub fn record(&self, x: f64) {
        self.n.fetch_add(1, Relaxed);
        add_f64(&self.sum, x);
        add_f64(&self.sumsq, x * x);
    }

    pub fn snapshot(&self) -> Moments {
        Moments {
            n: self.n.load(Relaxed),
            sum: f64::from_bits(self.sum.load(Relaxed)),
            sumsq: f64::from_bits(self.sumsq.load(Relaxed)),
        }
    }
}

/// Count, Σx and Σx² at one moment, or over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub n: u64,
    pub sum: f64,
    pub sumsq: f64,
}

impl Moments {
    /// Both together.
    pub fn plus(&self, other: &Moments) -> Moments {
        Moments { n: self.n + other.n, sum: self.sum + other.sum, sumsq: self.sumsq + other.sumsq }
    }

    pub fn since(&self, earlier: &Moments) -> Moments {
        if self.n < earlier.n {
            return *self;
        }
        Moments { n: self.n - earlier.n, sum: self.sum - earlier.sum, sumsq: (self.sumsq - earlier.sumsq).max(0.0) }
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

/// One app-reported metric of a snapshot: its type and moments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signal {
    pub kind: SignalKind,
    pub higher_is_better: bool,
    pub moments: Moments,
}

impl Default for GuardStats {
    fn default() -> Self {
        GuardStats {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            random_context: AtomicU64::new(0),
            latency_n: AtomicU64::new(0),
            latency_sum: AtomicI64::new(0),
            latency_sumsq: AtomicI64::new(0),
            latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            ttft_n: AtomicU64::new(0),
            ttft_sum: AtomicI64::new(0),
            ttft_sumsq: AtomicI64::new(0),
            usage_n: AtomicU64::new(0),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
            output_tokens_sumsq: AtomicU64::new(0),
            cost: ValueStats::new(SignalKind::Numeric, false),
            signals: Mutex::new(BTreeMap::new()),
        }
    }
}

/// One quantity's moments as the atomics hold them.
fn read(n: &AtomicU64, sum: &AtomicI64, sumsq: &AtomicI64) -> LogMoments {
    LogMoments::from_fixed(n.load(Relaxed), sum.load(Relaxed), sumsq.load(Relaxed))
}

impl GuardStats {
    /// Add one finished request.
    pub fn record(&self, f: &Finished) {
        self.requests.fetch_add(1, Relaxed);
        match f.outcome {
            Outcome::Ok => {
                let secs = f.duration.as_secs_f64();
                let (l, l2) = log_fixed(secs);
                self.latency_n.fetch_add(1, Relaxed);
                self.latency_sum.fetch_add(l, Relaxed);
                self.latency_sumsq.fetch_add(l2, Relaxed);
                self.latency_buckets[latency_bucket(secs)].fetch_add(1, Relaxed);
                if let Some(t) = f.ttft {
                    let (l, l2) = log_fixed(t.as_secs_f64());
                    self.ttft_n.fetch_add(1, Relaxed);
                    self.ttft_sum.fetch_add(l, Relaxed);
                    self.ttft_sumsq.fetch_add(l2, Relaxed);
                }
            }
            Outcome::UpstreamError | Outcome::Timeout | Outcome::GatewayError => {
                self.errors.fetch_add(1, Relaxed);
            }
            Outcome::ClientError => {
                self.client_errors.fetch_add(1, Relaxed);
            }
            Outcome::Cancelled => {
                self.cancelled.fetch_add(1, Relaxed);
            }
            // Counted by the guardrail's own metric.
            Outcome::Blocked => {}
        }
        if let Some(u) = f.usage {
            self.usage_n.fetch_add(1, Relaxed);
            self.input_tokens.fetch_add(u.input, Relaxed);
            self.output_tokens.fetch_add(u.output, Relaxed);
            self.output_tokens_sumsq.fetch_add(u.output.saturating_mul(u.output), Relaxed);
        }
        if let Some(c) = f.cost {
            self.cost.record(c);
        }
    }

    /// A request of this arm named no context (its key was random).
    pub fn note_random_context(&self) {
        self.random_context.fetch_add(1, Relaxed);
    }

    /// The counters of app-reported metric `key`, created on first use (or anew when its
    /// type changed: old values would mean something else).
    pub fn signal(&self, key: &str, kind: SignalKind, higher_is_better: bool) -> Arc<ValueStats> {
        let mut signals = self.signals.lock().unwrap_or_else(PoisonError::into_inner);
        match signals.get(key) {
            Some(s) if s.kind == kind && s.higher_is_better == higher_is_better => Arc::clone(s),
            _ => {
                let s = Arc::new(ValueStats::new(kind, higher_is_better));
                signals.insert(key.to_string(), Arc::clone(&s));
                s
            }
        }
    }

    /// The totals so far. Each field is read atomically; a request recorded during the
    /// read may show in some fields and not others, which a window of thousands absorbs.
    pub fn snapshot(&self) -> GuardSnapshot {
        GuardSnapshot {
            requests: self.requests.load(Relaxed),
            errors: self.errors.load(Relaxed),
            client_errors: self.client_errors.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            random_context: self.random_context.load(Relaxed),
            latency: read(&self.latency_n, &self.latency_sum, &self.latency_sumsq),
            latency_buckets: std::array::from_fn(|i| self.latency_buckets[i].load(Relaxed)),
            ttft: read(&self.ttft_n, &self.ttft_sum, &self.ttft_sumsq),
            usage_n: self.usage_n.load(Relaxed),
            input_tokens: self.input_tokens.load(Relaxed),
            output_tokens: self.output_tokens.load(Relaxed),
            output_tokens_sumsq: self.output_tokens_sumsq.load(Relaxed),
            cost: self.cost.snapshot(),
            signals: {
                let signals = self.signals.lock().unwrap_or_else(PoisonError::into_inner);
                signals
                    .iter()
                    .map(|(k, s)| {
                        let signal =
                            Signal { kind: s.kind, higher_is_better: s.higher_is_better, moments: s.snapshot() };
                        (k.clone(), signal)
                    })
                    .collect()
            },
        }
    }
}

/// The statistics of one (flag, variation) at one moment, or over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardSnapshot {
    pub requests: u64,
    pub errors: u64,
    pub client_errors: u64,
    pub cancelled: u64,
    /// Requests that named no context.
    pub random_context: u64,
    /// Of successful requests' durations.
    pub latency: LogMoments,
    pub latency_buckets: [u64; LATENCY_BUCKETS],
    /// Of streams' times to first token.
    pub ttft: LogMoments,
    pub usage_n: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub output_tokens_sumsq: u64,
    /// Of priced requests' cost in dollars.
    pub cost: Moments,
    /// App-reported metrics by key.
    pub signals: BTreeMap<String, Signal>,
}

impl Default for GuardSnapshot {
    fn default() -> Self {
        GuardSnapshot {
            requests: 0,
            errors: 0,
            client_errors: 0,
            cancelled: 0,
            random_context: 0,
            latency: LogMoments::default(),
            latency_buckets: [0; LATENCY_BUCKETS],
            ttft: LogMoments::default(),
            usage_n: 0,
            input_tokens: 0,
            output_tokens: 0,
            output_tokens_sumsq: 0,
            cost: Moments::default(),
            signals: BTreeMap::new(),
        }
    }
}

impl GuardSnapshot {
    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &GuardSnapshot) -> GuardSnapshot {
        GuardSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            client_errors: self.client_errors.saturating_sub(earlier.client_errors),
            cancelled: self.cancelled.saturating_sub(earlier.cancelled),
            random_context: self.random_context.saturating_sub(earlier.random_context),
            latency: self.latency.since(&earlier.latency),
            latency_buckets: std::array::from_fn(|i| {
                self.latency_buckets[i].saturating_sub(earlier.latency_buckets[i])
            }),
            ttft: self.ttft.since(&earlier.ttft),
            usage_n: self.usage_n.saturating_sub(earlier.usage_n),
            input_tokens: self.input_tokens.saturating_sub(earlier.input_tokens),
            output_tokens: self.output_tokens.saturating_sub(earlier.output_tokens),
            output_tokens_sumsq: self.output_tokens_sumsq.saturating_sub(earlier.output_tokens_sumsq),
            cost: self.cost.since(&earlier.cost),
            signals: self
                .signals
                .iter()
                .map(|(k, s)| {
                    let moments = match earlier.signals.get(k) {
                        Some(e) if e.kind == s.kind => s.moments.since(&e.moments),
                        _ => s.moments,
                    };
                    (k.clone(), Signal { moments, ..*s })
                })
                .collect(),
        }
    }

    /// Requests that ended with an upstream error, a timeout or a gateway error, over those
    /// that reached an end (cancelled and client errors excluded).
    pub fn error_rate(&self) -> Option<f64> {
        let n = self.latency.n + self.errors;
        (n > 0).then(|| self.errors as f64 / n as f64)
    }

    /// The share of successful requests at or above the lower bound of bucket `from`.
    pub fn share_at_or_above(&self, from: usize) -> Option<f64> {
        let n: u64 = self.latency_buckets.iter().sum();
        let above: u64 = self.latency_buckets.iter().skip(from).sum();
        (n > 0).then(|| above as f64 / n as f64)
    }

    /// The bucket holding the `q` quantile (0–1) of successful requests' latency.
    pub fn latency_quantile_bucket(&self, q: f64) -> Option<usize> {
        let n: u64 = self.latency_buckets.iter().sum();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        self.latency_buckets.iter().position(|&c| {
            seen += c;
            seen >= rank
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::Usage;

    fn finished(outcome: Outcome, ms: u64, ttft_ms: Option<u64>, usage: Option<(u64, u64)>) -> Finished {
        Finished {
            outcome,
            duration: Duration::from_millis(ms),
            ttft: ttft_ms.map(Duration::from_millis),
            overhead: Duration::ZERO,
            usage: usage.map(|(input, output)| Usage { input, output, cached: 0 }),
            cost: None,
        }
    }

    #[test]
    fn buckets_are_quarter_octaves_of_a_millisecond() {
        assert_eq!(latency_bucket(0.0005), 0);
        assert_eq!(latency_bucket(0.001), 0);
        assert_eq!(latency_bucket(0.002), 4);
        assert_eq!(latency_bucket(1.024), 40);
        assert_eq!(latency_bucket(1e9), LATENCY_BUCKETS - 1);
        for i in 1..LATENCY_BUCKETS {
            let lower = bucket_lower_bound(i);
            assert_eq!(latency_bucket(lower * 1.0001), i, "bucket {i}");
            assert_eq!(latency_bucket(lower * 0.9999), i - 1, "bucket {i}");
        }
    }

    #[test]
    fn records_by_outcome_and_windows_subtract() {
        let s = GuardStats::default();
        s.record(&finished(Outcome::Ok, 100, Some(10), Some((5, 7))));
        let start = s.snapshot();
        s.record(&finished(Outcome::Ok, 1000, Some(100), Some((3, 4))));
        s.record(&finished(Outcome::Ok, 10, None, None));
        s.record(&finished(Outcome::UpstreamError, 5, None, None));
        s.record(&finished(Outcome::Timeout, 5, None, None));
        s.record(&finished(Outcome::ClientError, 5, None, None));
        s.record(&finished(Outcome::Cancelled, 5, None, None));
        let w = s.snapshot().since(&start);
        assert_eq!((w.requests, w.errors, w.client_errors, w.cancelled), (6, 2, 1, 1));
        assert_eq!(w.latency.n, 2);
        assert_eq!(w.error_rate(), Some(0.5));
        // ln(1) + ln(0.01) over 2.
        let mean = w.latency.mean().unwrap();
        assert!((mean - (0.01f64.ln() / 2.0)).abs() < 1e-5, "{mean}");
        let var = w.latency.variance().unwrap();
        let expected = (0.01f64.ln() / 2.0).powi(2) * 2.0;
        assert!((var - expected).abs() < 1e-4, "{var} vs {expected}");
        assert_eq!(w.ttft.n, 1);
        assert!((w.ttft.mean().unwrap() - 0.1f64.ln()).abs() < 1e-5);
        assert_eq!((w.usage_n, w.input_tokens, w.output_tokens, w.output_tokens_sumsq), (1, 3, 4, 16));
        assert_eq!(w.latency_quantile_bucket(0.5), Some(latency_bucket(0.01)));
        assert_eq!(w.latency_quantile_bucket(1.0), Some(latency_bucket(1.0)));
        assert_eq!(w.share_at_or_above(latency_bucket(1.0)), Some(0.5));
    }
}
