//! The recent history of every (flag, variation), for the console's charts
//! (`GET /admin/v1/flags/{key}/timeseries`): what [`super::Metrics::totals`] gained, step by
//! step, in two rings of fixed resolution — [`FINE`] (10 s steps for the last hour) and
//! [`COARSE`] (5 min steps for the last 24 h). A step with no traffic holds nothing, so
//! an idle variation costs nothing; a busy one at most `FINE.points + COARSE.points`
//! points of [`Point`] (≤ 300 KB per variation with 16 latency buckets and 3 quality
//! metrics in every step: `memory_is_bounded_per_variation`).
//!
//! Nothing here reads a clock: [`History::sample`] and [`History::view`] take the time
//! (whole Unix seconds) from their caller — the admin plane's sampler every 10 s, or a
//! test. Totals are read, not recorded: the request path never touches this.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::guard::{bucket_lower_bound, GuardSnapshot, Moments, LATENCY_BUCKETS};
use crate::stats::LogMoments;

/// One ring's step and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    /// Seconds per step.
    pub step: u64,
    /// Steps kept.
    pub points: usize,
}

impl Resolution {
    /// How far back the ring reaches, in seconds.
    pub const fn span(self) -> u64 {
        self.step * self.points as u64
    }
}

/// 10 s steps for one hour.
pub const FINE: Resolution = Resolution { step: 10, points: 360 };
/// 5 min steps for 24 hours.
pub const COARSE: Resolution = Resolution { step: 300, points: 288 };

/// Most points one answer holds.
pub const MAX_POINTS: u64 = 1000;

/// What one (flag, variation) gained over a step (or a sum of steps).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    pub requests: u64,
    pub errors: u64,
    pub client_errors: u64,
    pub cancelled: u64,
    /// Successful requests' latency buckets (as [`GuardSnapshot::latency_buckets`]), only
    /// the non-empty ones, by index.
    buckets: Vec<(u8, u32)>,
    ttft: LogMoments,
    input_tokens: u64,
    output_tokens: u64,
    cost: Moments,
    /// App-reported metrics, judges and guardrails, by key.
    signals: Vec<(Arc<str>, Moments)>,
}

impl Point {
    fn from_window(w: &GuardSnapshot, names: &mut Names) -> Point {
        Point {
            requests: w.requests,
            errors: w.errors,
            client_errors: w.client_errors,
            cancelled: w.cancelled,
            buckets: (0..LATENCY_BUCKETS)
                .filter(|&i| w.latency_buckets[i] > 0)
                .map(|i| (i as u8, u32::try_from(w.latency_buckets[i]).unwrap_or(u32::MAX)))
                .collect(),
            ttft: w.ttft,
            input_tokens: w.input_tokens,
            output_tokens: w.output_tokens,
            cost: w.cost,
            signals: w
                .signals
                .iter()
                .filter(|(_, s)| s.moments.n > 0)
                .map(|(k, s)| (names.get(k), s.moments))
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.requests == 0 && self.signals.is_empty() && self.buckets.is_empty()
    }

    /// Add `other` to this point.
    fn add(&mut self, other: &Point) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.client_errors += other.client_errors;
        self.cancelled += other.cancelled;
        for &(i, c) in &other.buckets {
            match self.buckets.binary_search_by_key(&i, |b| b.0) {
                Ok(at) => self.buckets[at].1 = self.buckets[at].1.saturating_add(c),
                Err(at) => self.buckets.insert(at, (i, c)),
            }
        }
        self.ttft = self.ttft.plus(&other.ttft);
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost = self.cost.plus(&other.cost);
        for (k, m) in &other.signals {
            match self.signals.iter_mut().find(|(name, _)| name == k) {
                Some((_, mine)) => *mine = mine.plus(m),
                None => self.signals.push((Arc::clone(k), *m)),
            }
        }
    }

    /// The latency below which a share `q` of the successful requests ended, in ms (the
    /// geometric middle of its bucket: within ±10 %).
    fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        let n: u64 = self.buckets.iter().map(|b| u64::from(b.1)).sum();
        if n == 0 {
            return None;
        }
        let rank = (q * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        let (i, _) = *self.buckets.iter().find(|b| {
            seen += u64::from(b.1);
            seen >= rank
        })?;
        let i = usize::from(i);
        let low = bucket_lower_bound(i).max(0.0005);
        let high = bucket_lower_bound(i + 1);
        Some((low * high).sqrt() * 1000.0)
    }

    /// The answer's form of this point, at `t`.
    pub fn view(&self, t: u64) -> SeriesPoint {
        let ok: u64 = self.buckets.iter().map(|b| u64::from(b.1)).sum();
        let ended = ok + self.errors;
        SeriesPoint {
            t,
            requests: self.requests,
            errors: self.errors,
            client_errors: self.client_errors,
            cancelled: self.cancelled,
            error_rate: (ended > 0).then(|| self.errors as f64 / ended as f64),
            latency_p50_ms: self.latency_quantile_ms(0.5),
            latency_p95_ms: self.latency_quantile_ms(0.95),
            ttft_ms: self.ttft.mean().map(|l| l.exp() * 1000.0),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_usd: self.cost.sum,
            metrics: self
                .signals
                .iter()
                .map(|(k, m)| (k.to_string(), MetricPoint { n: m.n, mean: m.mean() }))
                .collect(),
        }
    }

    /// Heap bytes this point holds (for the memory bound).
    fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<(u8, u32)>()
            + self.signals.capacity() * std::mem::size_of::<(Arc<str>, Moments)>()
    }
}

/// One point of a chart: a variation over one step of the answer (or the whole window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// The step's start, Unix seconds.
    pub t: u64,
    pub requests: u64,
    /// Upstream errors, timeouts and gateway errors.
    pub errors: u64,
    pub client_errors: u64,
    pub cancelled: u64,
    /// Errors over requests that reached an end (cancelled and client errors left out).
    pub error_rate: Option<f64>,
    /// Of successful requests, from quarter-octave buckets (±10 %).
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    /// Streams' time to first token: the geometric mean.
    pub ttft_ms: Option<f64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of priced requests.
    pub cost_usd: f64,
    /// Feedback metrics, `judge:<name>` and `guardrail:<name>`: samples and mean.
    pub metrics: BTreeMap<String, MetricPoint>,
}

/// A quality metric over a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub n: u64,
    pub mean: Option<f64>,
}

/// The metric names the points share (one allocation per name, not per point).
#[derive(Debug, Default)]
struct Names(BTreeMap<String, Arc<str>>);

impl Names {
    fn get(&mut self, key: &str) -> Arc<str> {
        if let Some(name) = self.0.get(key) {
            return Arc::clone(name);
        }
        let name: Arc<str> = Arc::from(key);
        self.0.insert(key.to_string(), Arc::clone(&name));
        name
    }
}

/// The steps of one resolution, oldest first, by their start (only steps with data).
#[derive(Debug)]
struct Ring {
    resolution: Resolution,
    points: VecDeque<(u64, Point)>,
}

impl Ring {
    fn new(resolution: Resolution) -> Ring {
        Ring { resolution, points: VecDeque::new() }
    }

    /// Add `point` to the step holding `t`. A time older than the newest step (a clock
    /// set back) goes to the newest step: the ring stays in order.
    fn add(&mut self, t: u64, point: &Point) {
        let start = t - t % self.resolution.step;
        match self.points.back_mut() {
            Some((last, p)) if *last >= start => p.add(point),
            _ => self.points.push_back((start, point.clone())),
        }
        let oldest = start.saturating_sub(self.resolution.span() - self.resolution.step);
        while self.points.front().is_some_and(|(s, _)| *s < oldest) || self.points.len() > self.resolution.points {
            self.points.pop_front();
        }
    }

    /// The sum of the steps in [from, to).
    fn sum(&self, from: u64, to: u64, into: &mut Point) {
        for (_, p) in self.points.iter().filter(|(s, _)| *s >= from && *s < to) {
            into.add(p);
        }
    }
}

/// Which totals a series was last read from: a change (the fleet's totals replacing this
/// process's) starts it from a new baseline instead of counting the difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Process,
    Fleet,
}

#[derive(Debug)]
struct Series {
    /// The totals at the last sample.
    last: GuardSnapshot,
    source: Source,
    fine: Ring,
    coarse: Ring,
}

/// Every (flag, variation)'s history.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    series: BTreeMap<(String, String), Series>,
    names: Names,
}

/// What [`History::view`] was asked for, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Seconds back from now.
    pub window: u64,
    /// Seconds per point; a multiple of the resolution it is read from.
    pub step: u64,
}

impl Window {
    /// `window` and `step` in seconds (`step` 0: the ring's own, or about 60 points when
    /// that would be more than 360); a window of at most an
    /// hour is read from the 10 s ring, a longer one from the 5 min ring.
    pub fn new(window: u64, step: u64) -> Result<Window, String> {
        if window == 0 || window > COARSE.span() {
            return Err(format!("window: from 1 s to {} s (24 h)", COARSE.span()));
        }
        let resolution = if window <= FINE.span() { FINE } else { COARSE };
        // By default the ring's own steps, or about 60 points when they would be too many.
        let step = match step {
            0 if window / resolution.step <= FINE.points as u64 => resolution.step,
            0 => window / 60,
            step => step,
        };
        let step = step.div_ceil(resolution.step) * resolution.step;
        let window = window.div_ceil(step) * step;
        if window / step > MAX_POINTS {
            return Err(format!("step: at most {MAX_POINTS} points per answer (window ÷ step)"));
        }
        if window > COARSE.span() {
            return Err("window: at most 24 h once rounded up to whole steps".into());
        }
        Ok(Window { window, step })
    }

    fn resolution(self) -> Resolution {
        if self.window <= FINE.span() {
            FINE
        } else {
            COARSE
        }
    }
}

/// One variation's chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariationSeries {
    pub variation: String,
    /// The whole window.
    pub total: SeriesPoint,
    /// Oldest first, one per step, empty steps included.
    pub points: Vec<SeriesPoint>,
}

impl History {
    /// Take every series' totals at `now` (Unix seconds): what each gained since the last
    /// sample goes to the step of `now - 1` — the step that just ended when the sampler
    /// runs on the step's boundary. The first sample of a series, or one from another
    /// [`Source`], only sets its baseline.
    pub fn sample(
        &self,
        now: u64,
        source: Source,
        totals: impl IntoIterator<Item = ((String, String), GuardSnapshot)>,
    ) {
        let t = now.saturating_sub(1);
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Inner { series, names } = &mut *guard;
        for (key, now_totals) in totals {
            match series.get_mut(&key) {
                Some(s) if s.source == source => {
                    let point = Point::from_window(&now_totals.since(&s.last), names);
                    if !point.is_empty() {
                        s.fine.add(t, &point);
                        s.coarse.add(t, &point);
                    }
                    s.last = now_totals;
                }
                Some(s) => {
                    s.last = now_totals;
                    s.source = source;
                }
                None => {
                    let s = Series { last: now_totals, source, fine: Ring::new(FINE), coarse: Ring::new(COARSE) };
                    series.insert(key, s);
                }
            }
        }
    }

    /// `flag`'s `variations` over `window` up to `now`, with `live` — each variation's
    /// totals now and where they come from, if known — counted in the current step (what
    /// has not been sampled yet).
    pub fn view(
        &self,
        flag: &str,
        variations: &[String],
        w: Window,
        now: u64,
        live: &dyn Fn(&str) -> Option<(Source, GuardSnapshot)>,
    ) -> Vec<VariationSeries> {
        let resolution = w.resolution();
        // Steps are aligned to multiples of `step`; the last one holds `now`.
        let end = now - now % w.step + w.step;
        let start = end.saturating_sub(w.window);
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Inner { series, names } = &mut *guard;
        variations
            .iter()
            .map(|variation| {
                let s = series.get(&(flag.to_string(), variation.clone()));
                // Only against a baseline of the same totals (not a process's against the fleet's).
                let pending = match (s, live(variation)) {
                    (Some(s), Some((source, totals))) if source == s.source => {
                        Point::from_window(&totals.since(&s.last), names)
                    }
                    _ => Point::default(),
                };
                let mut total = Point::default();
                let points = (start..end)
                    .step_by(w.step as usize)
                    .map(|from| {
                        let mut p = Point::default();
                        if let Some(s) = s {
                            let ring = if resolution == FINE { &s.fine } else { &s.coarse };
                            ring.sum(from, from + w.step, &mut p);
                        }
                        if (from..from + w.step).contains(&now) {
                            p.add(&pending);
                        }
                        total.add(&p);
                        p.view(from)
                    })
                    .collect();
                VariationSeries { variation: variation.clone(), total: total.view(start), points }
            })
            .collect()
    }

    /// Heap bytes the points hold, and how many points there are (for the memory bound).
    pub fn footprint(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut bytes = 0;
        let mut points = 0;
        for s in inner.series.values() {
            for ring in [&s.fine, &s.coarse] {
                points += ring.points.len();
                bytes += ring.points.capacity() * std::mem::size_of::<(u64, Point)>();
                bytes += ring.points.iter().map(|(_, p)| p.heap_bytes()).sum::<usize>();
            }
        }
        (bytes, points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::guard::{latency_bucket, GuardStats, Signal, SignalKind};
    use crate::metrics::{Finished, Outcome, Usage};
    use std::time::Duration;

    fn key(v: &str) -> (String, String) {
        ("bot".to_string(), v.to_string())
    }

    fn ok(stats: &GuardStats, ms: u64) {
        stats.record(&Finished {
            outcome: Outcome::Ok,
            duration: Duration::from_millis(ms),
            ttft: Some(Duration::from_millis(ms / 2)),
            overhead: Duration::ZERO,
            usage: Some(Usage { input: 10, output: 20, cached: 0 }),
            cost: Some(0.5),
        });
    }

    fn failed(stats: &GuardStats) {
        stats.record(&Finished {
            outcome: Outcome::UpstreamError,
            duration: Duration::from_millis(5),
            ttft: None,
            overhead: Duration::ZERO,
            usage: None,
            cost: None,
        });
    }

    fn none(_: &str) -> Option<(Source, GuardSnapshot)> {
        None
    }

    const T0: u64 = 1_800_000_000; // a multiple of 300

    #[test]
    fn each_sample_lands_in_the_step_that_just_ended() {
        let h = History::default();
        let control = GuardStats::default();
        h.sample(T0, Source::Process, [(key("control"), control.snapshot())]);
        ok(&control, 100);
        ok(&control, 100);
        h.sample(T0 + 10, Source::Process, [(key("control"), control.snapshot())]);
        failed(&control);
        ok(&control, 1000);
        h.sample(T0 + 20, Source::Process, [(key("control"), control.snapshot())]);

        let w = Window::new(60, 10).unwrap();
        let v = h.view("bot", &["control".into()], w, T0 + 25, &none);
        let points: Vec<(u64, u64, u64)> = v[0].points.iter().map(|p| (p.t, p.requests, p.errors)).collect();
        assert_eq!(
            points,
            [(T0 - 30, 0, 0), (T0 - 20, 0, 0), (T0 - 10, 0, 0), (T0, 2, 0), (T0 + 10, 2, 1), (T0 + 20, 0, 0)]
        );
        assert_eq!(v[0].total.requests, 4);
        assert_eq!(v[0].total.error_rate, Some(1.0 / 4.0));
        assert_eq!((v[0].total.input_tokens, v[0].total.output_tokens), (30, 60));
        assert!((v[0].total.cost_usd - 1.5).abs() < 1e-9);
        // The p50 of {100, 100, 1000} ms is 100 ms's bucket, reported at its middle.
        let p50 = v[0].total.latency_p50_ms.unwrap();
        let low = bucket_lower_bound(latency_bucket(0.1)) * 1000.0;
        assert!(p50 > low && p50 < low * 1.19, "{p50}");
        let p95 = v[0].total.latency_p95_ms.unwrap();
        assert!(p95 > 900.0 && p95 < 1100.0, "{p95}");
        // Geometric mean of the ttfts 50, 50, 500 ms.
        let ttft = v[0].total.ttft_ms.unwrap();
        let expected = (50f64 * 50.0 * 500.0).cbrt();
        assert!((ttft - expected).abs() < 0.01, "{ttft} vs {expected}");
        // An empty step has no rates.
        assert_eq!(v[0].points[0].error_rate, None);
        assert_eq!(v[0].points[0].latency_p50_ms, None);
    }

    #[test]
    fn the_unsampled_part_counts_in_the_current_step() {
        let h = History::default();
        let stats = GuardStats::default();
        h.sample(T0, Source::Process, [(key("control"), stats.snapshot())]);
        ok(&stats, 10);
        ok(&stats, 10);
        ok(&stats, 10);
        let live = |v: &str| (v == "control").then(|| (Source::Process, stats.snapshot()));
        let v = h.view("bot", &["control".into()], Window::new(60, 10).unwrap(), T0 + 4, &live);
        assert_eq!(v[0].points.last().map(|p| (p.t, p.requests)), Some((T0, 3)));
        assert_eq!(v[0].total.requests, 3);
        // Sampling it later does not count it twice.
        h.sample(T0 + 10, Source::Process, [(key("control"), stats.snapshot())]);
        let v = h.view("bot", &["control".into()], Window::new(60, 10).unwrap(), T0 + 12, &live);
        assert_eq!(v[0].total.requests, 3);
        // Totals of another source are not set against this baseline.
        let fleet = |_: &str| Some((Source::Fleet, GuardSnapshot { requests: 1000, ..GuardSnapshot::default() }));
        let v = h.view("bot", &["control".into()], Window::new(60, 10).unwrap(), T0 + 12, &fleet);
        assert_eq!(v[0].total.requests, 3);
    }

    #[test]
    fn wider_steps_sum_the_fine_ring_and_long_windows_read_the_coarse_one() {
        let h = History::default();
        let stats = GuardStats::default();
        h.sample(T0, Source::Process, [(key("control"), stats.snapshot())]);
        // One request in each of 60 ten-second steps (ten minutes).
        for i in 1..=60 {
            ok(&stats, 50);
            h.sample(T0 + 10 * i, Source::Process, [(key("control"), stats.snapshot())]);
        }
        let now = T0 + 600;
        let minute = h.view("bot", &["control".into()], Window::new(600, 60).unwrap(), now, &none);
        let counts: Vec<u64> = minute[0].points.iter().map(|p| p.requests).collect();
        // The window ends with the step holding `now` (empty), so it starts a minute later.
        assert_eq!(counts, [6, 6, 6, 6, 6, 6, 6, 6, 6, 0], "{counts:?}");
        let day = h.view("bot", &["control".into()], Window::new(86_400, 0).unwrap(), now, &none);
        assert_eq!(day[0].points.len(), 288);
        assert_eq!(day[0].points.iter().map(|p| p.requests).sum::<u64>(), 60);
        let five: Vec<u64> = day[0].points.iter().rev().take(3).map(|p| p.requests).collect();
        assert_eq!(five, [0, 30, 30]);
        // Steps are rounded up to the ring's resolution, windows to whole steps.
        assert_eq!(Window::new(7200, 0).unwrap(), Window { window: 7200, step: 300 });
        assert_eq!(Window::new(300, 15).unwrap(), Window { window: 300, step: 20 });
        assert!(Window::new(0, 0).is_err());
        assert!(Window::new(86_401, 0).is_err());
        assert!(Window::new(3600, 1).is_ok());
        assert!(Window::new(86_400, 60).is_ok(), "a minute rounds up to 5 min over a day");
    }

    #[test]
    fn old_steps_fall_off_the_end() {
        let h = History::default();
        let stats = GuardStats::default();
        h.sample(T0, Source::Process, [(key("control"), stats.snapshot())]);
        for i in 1..=400 {
            ok(&stats, 50);
            h.sample(T0 + 10 * i, Source::Process, [(key("control"), stats.snapshot())]);
        }
        let now = T0 + 4000;
        let hour = h.view("bot", &["control".into()], Window::new(3600, 10).unwrap(), now, &none);
        assert_eq!(hour[0].points.len(), 360);
        // The last hour's 359 finished steps (the current one is empty).
        assert_eq!(hour[0].total.requests, 359);
        let (_, points) = h.footprint();
        assert_eq!(points, 360 + 14, "the fine ring is full; the coarse one has one point per 5 min");
    }

    #[test]
    fn a_new_source_starts_from_a_baseline() {
        let h = History::default();
        let local = GuardStats::default();
        ok(&local, 10);
        h.sample(T0, Source::Process, [(key("control"), local.snapshot())]);
        ok(&local, 10);
        h.sample(T0 + 10, Source::Process, [(key("control"), local.snapshot())]);
        // The fleet's totals are far larger: none of that happened in this step.
        let fleet = GuardStats::default();
        for _ in 0..1000 {
            ok(&fleet, 10);
        }
        h.sample(T0 + 20, Source::Fleet, [(key("control"), fleet.snapshot())]);
        for _ in 0..5 {
            ok(&fleet, 10);
        }
        h.sample(T0 + 30, Source::Fleet, [(key("control"), fleet.snapshot())]);
        let v = h.view("bot", &["control".into()], Window::new(60, 10).unwrap(), T0 + 35, &none);
        assert_eq!(v[0].total.requests, 1 + 5);
    }

    #[test]
    fn quality_metrics_are_kept_per_step() {
        let h = History::default();
        let mut totals = GuardSnapshot::default();
        h.sample(T0, Source::Process, [(key("control"), totals.clone())]);
        let signal = |n, sum| Signal {
            kind: SignalKind::Boolean,
            higher_is_better: true,
            moments: Moments { n, sum, sumsq: sum },
        };
        totals.signals.insert("thumbs_up".into(), signal(4, 3.0));
        h.sample(T0 + 10, Source::Process, [(key("control"), totals.clone())]);
        totals.signals.insert("thumbs_up".into(), signal(6, 3.0));
        h.sample(T0 + 20, Source::Process, [(key("control"), totals.clone())]);
        let v = h.view("bot", &["control".into()], Window::new(30, 10).unwrap(), T0 + 25, &none);
        let by_step: Vec<Option<&MetricPoint>> = v[0].points.iter().map(|p| p.metrics.get("thumbs_up")).collect();
        assert_eq!(
            by_step,
            [Some(&MetricPoint { n: 4, mean: Some(0.75) }), Some(&MetricPoint { n: 2, mean: Some(0.0) }), None]
        );
        assert_eq!(v[0].total.metrics["thumbs_up"], MetricPoint { n: 6, mean: Some(0.5) });
    }

    /// The documented bound: at most 648 points per variation, ≤ 300 KB with a wide spread
    /// of latencies and a few quality metrics in every step.
    #[test]
    fn memory_is_bounded_per_variation() {
        let h = History::default();
        let stats = GuardStats::default();
        for name in ["thumbs_up", "judge:helpfulness", "guardrail:no_pii"] {
            stats.signal(name, SignalKind::Numeric, true);
        }
        h.sample(T0, Source::Process, [(key("control"), stats.snapshot())]);
        // Two days of 10 s steps, each with latencies over 16 buckets and 3 metrics.
        for i in 1..=(2 * 8640) {
            for b in 0..16 {
                ok(&stats, 100 + 40 * b);
            }
            for name in ["thumbs_up", "judge:helpfulness", "guardrail:no_pii"] {
                stats.signal(name, SignalKind::Numeric, true).record(1.0);
            }
            h.sample(T0 + 10 * i, Source::Process, [(key("control"), stats.snapshot())]);
        }
        let (bytes, points) = h.footprint();
        assert_eq!(points, FINE.points + COARSE.points);
        eprintln!("history of one busy variation: {points} points, {bytes} bytes");
        assert!(bytes <= 300 * 1024, "{bytes} bytes for one variation");
    }
}
