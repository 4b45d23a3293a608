//! Answer quality measured by sluice itself: answers captured off the request path,
//! LLM-as-judge scores, guardrail checks — each a metric of the variation that answered
//! (`judge:<name>`: the mean score; `guardrail:<name>`: the violation rate), kept in the
//! same per-arm statistics as app feedback, so guards and experiments read them alike.
//!
//! Per request, [`FlagQuality::sample`] decides from a hash of the request id — before the
//! flag is evaluated, the same for every variation — which judges and guardrails look at
//! the answer. Only then does a [`Pending`] start: it rides in the request's record, reads
//! the answer as it passes ([`capture`]), and when the body ends well runs the guardrails
//! (in-process, microseconds) and hands the answer to each sampled judge's queue
//! ([`judge::Judge::submit`], never waiting).

pub mod capture;
pub mod guardrail;
pub mod judge;

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::flags::FlagConfig;
use crate::config::guardrails::GuardrailMode;
use crate::config::judges::JudgeConfig;
use crate::config::{Config, Problem, ProviderConfig, UpstreamTimeouts};
use crate::metrics::{GuardrailCounters, JudgeArmCounters, Metrics, SignalKind, SkipReason, ValueStats};
use crate::providers::Provider;
use capture::{Budget, Capture, Captured, Held, Shape};
use guardrail::{Answer, Guardrail};
use judge::{Job, Judge, Judged};

/// The judges and guardrails of one configuration (judges carried over, with their
/// queues, when their configuration did not change).
#[derive(Debug, Default)]
pub struct Quality {
    judges: BTreeMap<String, (JudgeKey, Arc<Judge>)>,
    guardrails: BTreeMap<String, Arc<Guardrail>>,
}

/// What a judge is built from.
#[derive(Debug, Clone, PartialEq)]
struct JudgeKey {
    judge: JudgeConfig,
    provider: ProviderConfig,
    defaults: UpstreamTimeouts,
}

impl Quality {
    pub fn build(config: &Config, metrics: &Metrics, previous: Option<&Quality>) -> Result<Quality, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut judges = BTreeMap::new();
        for (name, j) in &config.judges {
            let Some(p) = config.providers.get(&j.provider) else { continue };
            let key = JudgeKey { judge: j.clone(), provider: p.clone(), defaults: config.upstream.clone() };
            if let Some((k, judge)) = previous.and_then(|q| q.judges.get(name)).filter(|(k, _)| *k == key) {
                judges.insert(name.clone(), (k.clone(), Arc::clone(judge)));
                continue;
            }
            // The judge's own instance of its provider: its own pool, used on the judge thread only.
            match Provider::build(&j.provider, p, &config.upstream, 1) {
                Ok(provider) => {
                    let price = config.pricing.get(&j.provider).and_then(|m| m.get(&j.model)).copied();
                    let judge = Judge::new(name, j, Arc::new(provider), price, metrics.judge_totals(name));
                    judges.insert(name.clone(), (key, Arc::new(judge)));
                }
                Err(e) => problems.push(Problem::new(format!("judges.{name}.provider"), e)),
            }
        }
        let mut guardrails = BTreeMap::new();
        for (name, g) in &config.guardrails {
            match Guardrail::compile(g) {
                Ok(g) => {
                    guardrails.insert(name.clone(), Arc::new(g));
                }
                Err(e) => problems.push(Problem::new(format!("guardrails.{name}"), e)),
            }
        }
        if problems.is_empty() {
            Ok(Quality { judges, guardrails })
        } else {
            Err(problems)
        }
    }

    /// What a routing flag attaches.
    pub fn flag(&self, flag: &FlagConfig) -> FlagQuality {
        let judges = flag
            .judges
            .iter()
            .filter_map(|(name, u)| {
                let (_, judge) = self.judges.get(name)?;
                Some(Sampler::new(name, u.sample_rate, Arc::clone(judge)))
            })
            .collect();
        let guardrails = flag
            .guardrails
            .iter()
            .filter_map(|(name, u)| {
                let g = self.guardrails.get(name)?;
                Some(Sampler::new(name, u.sample_rate, (Arc::<str>::from(name.as_str()), Arc::clone(g))))
            })
            .collect();
        FlagQuality { judges, guardrails }
    }
}

/// One judge or guardrail of a flag, with its share.
#[derive(Debug)]
struct Sampler<T> {
    /// Sampled when the request id's hash is below this (`u64::MAX`: always).
    below: u64,
    seed: u64,
    what: T,
}

impl<T> Sampler<T> {
    fn new(name: &str, rate: f64, what: T) -> Self {
        let below = if rate >= 1.0 {
            u64::MAX
        } else {
            // 2^64 · rate, exactly enough for the shares a config can name.
            (rate.max(0.0) * 18_446_744_073_709_551_616.0) as u64
        };
        let seed = foldhash::fast::FixedState::with_seed(0x5_1u64).hash_one(name);
        Sampler { below, seed, what }
    }

    fn sampled(&self, request_id: &[u8]) -> bool {
        self.below == u64::MAX || foldhash::fast::FixedState::with_seed(self.seed).hash_one(request_id) < self.below
    }
}

/// A routing flag's judges and guardrails.
#[derive(Debug, Default)]
pub struct FlagQuality {
    judges: Vec<Sampler<Arc<Judge>>>,
    guardrails: Vec<Sampler<(Arc<str>, Arc<Guardrail>)>>,
}

/// Which of a flag's judges and guardrails look at one answer (bit `i`: the `i`-th).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sampled {
    pub judges: u64,
    pub guardrails: u64,
}

impl Sampled {
    pub fn is_empty(&self) -> bool {
        self.judges == 0 && self.guardrails == 0
    }
}

fn bits(n: usize, mut on: impl FnMut(usize) -> bool) -> u64 {
    (0..n.min(64)).filter(|&i| on(i)).fold(0, |b, i| b | 1 << i)
}

impl FlagQuality {
    pub fn is_empty(&self) -> bool {
        self.judges.is_empty() && self.guardrails.is_empty()
    }

    /// Which judges and guardrails look at the answer to request `request_id`.
    pub fn sample(&self, request_id: &[u8]) -> Sampled {
        Sampled {
            judges: bits(self.judges.len(), |i| self.judges[i].sampled(request_id)),
            guardrails: bits(self.guardrails.len(), |i| self.guardrails[i].sampled(request_id)),
        }
    }

    /// Whether any guardrail may block (non-streamed answers are then read whole first).
    pub fn blocks(&self, sampled: Sampled) -> bool {
        self.guardrails
            .iter()
            .enumerate()
            .any(|(i, g)| sampled.guardrails & (1 << i) != 0 && g.what.1.mode == GuardrailMode::Block)
    }

    /// One variation's handles.
    pub fn arm(&self, metrics: &Metrics, flag: &str, variation: &str) -> Arc<ArmQuality> {
        let stats = metrics.guard_stats(flag, variation);
        let judges = self
            .judges
            .iter()
            .map(|s| {
                let judge = Arc::clone(&s.what);
                let key = format!("judge:{}", judge.name);
                ArmJudge {
                    stats: stats.signal(&key, SignalKind::Numeric, judge.higher_is_better()),
                    counters: metrics.judge_arm(flag, variation, &judge.name),
                    judge,
                }
            })
            .collect();
        let guardrails = self
            .guardrails
            .iter()
            .map(|s| {
                let (name, g) = &s.what;
                ArmGuardrail {
                    name: Arc::clone(name),
                    guardrail: Arc::clone(g),
                    stats: stats.signal(&format!("guardrail:{name}"), SignalKind::Boolean, false),
                    counters: metrics.guardrail_arm(flag, variation, name),
                }
            })
            .collect();
        Arc::new(ArmQuality { judges, guardrails })
    }
}

/// One variation's judges and guardrails, in the flag's order.
#[derive(Debug, Default)]
pub struct ArmQuality {
    judges: Vec<ArmJudge>,
    guardrails: Vec<ArmGuardrail>,
}

#[derive(Debug)]
struct ArmJudge {
    judge: Arc<Judge>,
    stats: Arc<ValueStats>,
    counters: JudgeArmCounters,
}

#[derive(Debug)]
struct ArmGuardrail {
    name: Arc<str>,
    guardrail: Arc<Guardrail>,
    /// 1 for a violation, 0 for a pass.
    stats: Arc<ValueStats>,
    counters: GuardrailCounters,
}

/// The capture budget of a configuration (kept across reloads while its size is the same).
pub fn budget(limit: usize, previous: Option<&Arc<Budget>>) -> Arc<Budget> {
    match previous {
        Some(b) if b.limit() == limit => Arc::clone(b),
        _ => Budget::new(limit),
    }
}

/// One request's quality work, from the request to the end of its answer.
#[derive(Debug)]
pub struct Pending {
    sampled: Sampled,
    shape: Shape,
    /// The arm that served (the last attempt's).
    arm: Option<Arc<ArmQuality>>,
    /// `None`: the budget had no room.
    capture: Option<Capture>,
    /// The answer, when a blocking check read it whole before it was sent.
    captured: Option<Captured>,
    /// The app's request, kept only when a judge will read it.
    request: Option<Bytes>,
    /// The request's `response_format`, for the JSON guardrails.
    response_format: Option<String>,
    /// The answer was read whole already (a blocking check).
    fed: bool,
    checked: bool,
}

impl Pending {
    /// The quality work of a request to `endpoint` (none for embeddings). `request` is the
    /// app's body, `response_format` its member of that name.
    pub fn start(
        sampled: Sampled,
        endpoint: crate::wire::Endpoint,
        budget: &Arc<Budget>,
        limit: usize,
        request: &Bytes,
        response_format: Option<&str>,
    ) -> Option<Pending> {
        if sampled.is_empty() {
            return None;
        }
        let shape = Shape::of(endpoint)?;
        let judged = sampled.judges != 0;
        let keep = if judged { request.len() } else { 0 } + response_format.map_or(0, str::len);
        let held = Held::take(budget, keep);
        let capture = held.map(|h| Capture::new(shape, limit, h));
        let kept = capture.is_some();
        Some(Pending {
            sampled,
            shape,
            arm: None,
            request: (judged && kept).then(|| request.clone()),
            response_format: response_format.filter(|_| kept).map(str::to_string),
            capture,
            captured: None,
            fed: false,
            checked: false,
        })
    }

    /// The arm the current attempt goes to.
    pub fn arm(&mut self, arm: &Arc<ArmQuality>) {
        self.arm = Some(Arc::clone(arm));
    }

    /// A forwarded SSE frame (whole events).
    pub fn feed_events(&mut self, frame: &[u8]) {
        if let Some(c) = &mut self.capture {
            c.feed_events(frame);
        }
    }

    /// A whole JSON answer.
    pub fn feed_whole(&mut self, body: &[u8]) {
        if self.fed {
            return;
        }
        self.fed = true;
        if let Some(c) = &mut self.capture {
            c.feed_whole(body);
        }
    }

    /// The answer was too large to read: its checks see nothing (truncated).
    pub fn truncated(&mut self) {
        if let Some(c) = &mut self.capture {
            c.mark_truncated();
        }
    }

    /// Check a whole answer before it is sent: the guardrails run now, and the name of
    /// the first `block` one it fails is returned (that answer is refused).
    pub fn check_whole(&mut self, body: &[u8]) -> Option<Arc<str>> {
        self.feed_whole(body);
        let arm = self.arm.clone()?;
        let capture = self.capture.take()?;
        let captured = capture.finish();
        let blocked = self.run_guardrails(&arm, &captured, true);
        // The answer goes on to the judges once the body has gone out.
        self.captured = Some(captured);
        blocked
    }

    /// The answer ended: well (`ok`), or broken, cancelled, refused, an error.
    pub fn finish(mut self, ok: bool) {
        let Some(arm) = self.arm.take() else { return };
        let sampled = self.sampled;
        let judges = || arm.judges.iter().enumerate().filter(move |(i, _)| sampled.judges & (1 << i) != 0);
        let skip = |reason: SkipReason| judges().for_each(|(_, j)| j.counters.skipped[reason as usize].inc());
        let skip_guardrails = |checked: bool| {
            if !checked {
                for (i, g) in arm.guardrails.iter().enumerate() {
                    if sampled.guardrails & (1 << i) != 0 {
                        g.counters.skipped.inc();
                    }
                }
            }
        };
        if !ok {
            skip(SkipReason::Incomplete);
            skip_guardrails(self.checked);
            return;
        }
        let captured = match (self.captured.take(), self.capture.take()) {
            (Some(captured), _) => captured,
            (None, Some(capture)) => capture.finish(),
            (None, None) => {
                skip(SkipReason::Capacity);
                skip_guardrails(self.checked);
                return;
            }
        };
        if !self.checked {
            self.run_guardrails(&arm, &captured, false);
        }
        if self.sampled.judges == 0 {
            return;
        }
        if captured.truncated {
            skip(SkipReason::Truncated);
            return;
        }
        let Some(request) = self.request.take() else { return };
        let judged = Arc::new(Judged { request, shape: self.shape, text: captured.answer(), captured });
        for (_, j) in judges() {
            let job = Job { answer: Arc::clone(&judged), stats: Arc::clone(&j.stats), counters: j.counters.clone() };
            j.judge.submit(job);
        }
    }

    /// Run the sampled guardrails on `captured`; the first `block` one failed, when `blocking`.
    fn run_guardrails(&mut self, arm: &ArmQuality, captured: &Captured, blocking: bool) -> Option<Arc<str>> {
        self.checked = true;
        let answer = Answer {
            text: &captured.text,
            tools: &captured.tools,
            finish_reason: captured.finish_reason.as_deref(),
            response_format: self.response_format.as_deref(),
            truncated: captured.truncated,
        };
        let mut blocked = None;
        for (i, g) in arm.guardrails.iter().enumerate() {
            if self.sampled.guardrails & (1 << i) == 0 {
                continue;
            }
            let violated = g.guardrail.violated(&answer);
            g.stats.record(if violated { 1.0 } else { 0.0 });
            match (violated, blocking && g.guardrail.mode == GuardrailMode::Block) {
                (false, _) => g.counters.pass.inc(),
                (true, false) => g.counters.fail.inc(),
                (true, true) => {
                    g.counters.blocked.inc();
                    blocked.get_or_insert_with(|| Arc::clone(&g.name));
                }
            }
        }
        blocked
    }
}

/// Whether the judge or guardrail `name`, attached at `rate`, looks at the answer to
/// request `request_id`: the rule every sluice samples by (the same on every instance).
pub fn sampled(name: &str, rate: f64, request_id: &[u8]) -> bool {
    Sampler::new(name, rate, ()).sampled(request_id)
}
