//! The guard task: four times a second it looks at each guarded flag whose check interval
//! has passed, compares treatment with control over the current step's window, and acts —
//! through the one write path, with `If-Match`, so an operator's concurrent change is
//! never overwritten — on a trip (rollback or pause), on the circuit breaker, and on ramp
//! steps. It never touches the request path: it only reads the guard statistics.
//!
//! A pass ([`Guards::check_all`]) is given the time and reads no clock itself: the task
//! passes the system clock's, tests and simulations their own (see [`super::clock`]).
//! Each guard is compiled once per revision of its flag (`compile.rs`); one that
//! does not compile is logged then and shown in its status, not checked.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::check::{self, Arms, Evaluated, Identity, Window};
use super::clock::{Clock, Now};
use super::compile::{Cache, Compiled};
use super::edit::{move_traffic, set_share};
use super::stats::Decision;
use crate::config::guard::{GuardState, MetricKind, OnTrip};
use crate::metrics::{GuardSnapshot, Metrics};
use crate::providers::{self, HttpsClient};
use crate::state::{Change, ChangeError, Request, State};

/// How often the task looks for guards that are due.
const TICK: Duration = Duration::from_millis(250);

/// One metric's latest check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricStatus {
    pub metric: Cow<'static, str>,
    /// The samples this metric's test saw (TTFT: streams; output tokens: answers with
    /// usage; otherwise requests).
    pub control_samples: u64,
    pub treatment_samples: u64,
    /// The arms' values, the estimate, its interval and Λ: `null` while an arm has no data
    /// (no number stands in for one that was never measured).
    pub control: Option<f64>,
    pub treatment: Option<f64>,
    pub estimate: Option<f64>,
    pub margin: f64,
    /// Clipped to what the metric can be (a difference of proportions lies in [−1, 1]).
    pub interval: Option<[f64; 2]>,
    pub lambda: Option<f64>,
    /// `insufficient`, `pass` or `trip`.
    pub decision: Cow<'static, str>,
}

impl MetricStatus {
    fn of(e: &Evaluated) -> MetricStatus {
        let (control_samples, treatment_samples) = e.samples;
        let data = control_samples > 0 && treatment_samples > 0;
        let known = |x: f64| (data && x.is_finite()).then_some(x);
        let proportion = matches!(e.kind, MetricKind::ErrorRate | MetricKind::LatencyTail);
        let clip = |x: f64| if proportion { x.clamp(-1.0, 1.0) } else { x };
        let interval = (data && e.estimate.low.is_finite() && e.estimate.high.is_finite())
            .then(|| [clip(e.estimate.low), clip(e.estimate.high)]);
        MetricStatus {
            metric: e.name.to_string().into(),
            control_samples,
            treatment_samples,
            control: (control_samples > 0).then_some(e.estimate.control),
            treatment: (treatment_samples > 0).then_some(e.estimate.treatment),
            estimate: known(e.estimate.delta),
            margin: e.estimate.margin,
            interval,
            lambda: known(e.estimate.lambda),
            decision: decision_str(e.decision).into(),
        }
    }
}

/// A guarded flag's latest check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlagStatus {
    pub flag: String,
    /// `armed`, `paused`, `rolled_back`, or `invalid` for a guard that does not compile.
    pub state: Cow<'static, str>,
    pub control: String,
    pub treatment: String,
    /// The ramp step (from 0) and the treatment's share there, if there is a ramp.
    pub step: Option<usize>,
    /// The ramp's number of steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    pub percent: Option<f64>,
    pub checked_at: Option<String>,
    pub metrics: Vec<MetricStatus>,
    /// Why the guard does not compile (it is not checked until its flag changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The guard's last trip since this process started (the audit log keeps them all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trip: Option<LastTrip>,
    /// The sample-ratio check of the arms' requests in the window against their shares of
    /// the fallthrough (null: not a split of both arms, or too few requests).
    #[serde(default)]
    pub srm_p_value: Option<f64>,
    /// What makes this window's comparison doubtful: `no traffic`, `no samples for <metric>`,
    /// `sample ratio mismatch`.
    #[serde(default)]
    pub health: Vec<String>,
}

/// When and why a guard last tripped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastTrip {
    pub at: String,
    pub revision: u64,
    pub metric: Cow<'static, str>,
    /// The audit entry's reason: the metric, estimate, interval, Λ, samples and action.
    pub reason: String,
}

/// What one pass of [`Guards::check_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// The flags whose guard was checked (the first check of a window, or its interval
    /// had passed).
    pub checked: Vec<String>,
    /// The flags whose guard does not compile.
    pub invalid: Vec<String>,
    /// The revisions the guard wrote (trips and ramp steps).
    pub wrote: Vec<u64>,
}

/// The guards of one gateway.
pub struct Guards {
    state: Arc<State>,
    compiled: Mutex<Cache>,
    windows: Mutex<HashMap<String, Window>>,
    status: Mutex<BTreeMap<String, FlagStatus>>,
    trips: Mutex<HashMap<String, LastTrip>>,
    /// Where webhooks are posted from, and with what (one client, its connections reused).
    runtime: tokio::runtime::Handle,
    webhooks: HttpsClient,
    /// With the fleet store: the lease that says whether this instance decides. Every
    /// instance checks (its status is the fleet's); only the leader writes, with its token.
    lease: Option<Arc<crate::fleet::lease::Lease>>,
}

/// What a trip or a step tells the audit log and the webhook.
#[derive(Debug, Clone, Serialize)]
struct Event {
    event: &'static str,
    flag: String,
    metric: Option<String>,
    estimate: Option<f64>,
    interval: Option<[f64; 2]>,
    lambda: Option<f64>,
    control_samples: u64,
    treatment_samples: u64,
    action: String,
    /// The event's id: the same for the same trip (flag, revision, metric) on any
    /// instance and on every retry of its webhook (also its `Idempotency-Key` header).
    trip_id: Option<String>,
}

/// Where a decision writes: against which revision, with which lease token.
#[derive(Debug, Clone, Copy)]
struct At {
    revision: u64,
    fence: Option<u64>,
}

/// The id of an event: a hash of what identifies it.
fn event_id(flag: &str, revision: u64, event: &str, detail: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{flag}\u{1f}{revision}\u{1f}{event}\u{1f}{detail}"));
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The revision a check writes against (`If-Match`), and the one that last changed the
/// flag (any change of the flag — a step, a re-arm, a new split — starts a new window).
#[derive(Debug, Clone, Copy)]
struct Revisions {
    current: u64,
    changed_at: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Guards {
    pub fn new(state: Arc<State>, runtime: tokio::runtime::Handle) -> Guards {
        Guards {
            state,
            compiled: Mutex::new(Cache::default()),
            windows: Mutex::new(HashMap::new()),
            status: Mutex::new(BTreeMap::new()),
            trips: Mutex::new(HashMap::new()),
            runtime,
            webhooks: providers::https_client(WEBHOOK_TIMEOUT),
            lease: None,
        }
    }

    /// Decide only while holding the fleet's lease.
    pub fn with_lease(mut self, lease: Arc<crate::fleet::lease::Lease>) -> Guards {
        self.lease = Some(lease);
        self
    }

    /// Give the fleet's lease up (on shutdown).
    pub fn release(&self) {
        if let Some(lease) = &self.lease {
            lease.release();
        }
    }

    /// The latest check of every guarded flag.
    /// The guard's state is the flag's as it is now (a re-arm or a pause shows at once,
    /// not at the next check), with the last trip.
    pub fn status(&self) -> Vec<FlagStatus> {
        let current = self.state.current();
        let trips = lock(&self.trips);
        let mut all: Vec<FlagStatus> = lock(&self.status).values().cloned().collect();
        for s in &mut all {
            let now = current.docs.flags.get(&s.flag).and_then(|d| d["guard"]["state"].as_str());
            if s.state != "invalid" {
                s.state = match now {
                    Some("paused") => GuardState::Paused.as_str(),
                    Some("rolled_back") => GuardState::RolledBack.as_str(),
                    _ => GuardState::Armed.as_str(),
                }
                .into();
            }
            s.last_trip = trips.get(&s.flag).cloned();
        }
        all
    }

    /// Run the checks forever, a pass every 250 ms at the time `clock` tells (each pass on
    /// the blocking pool: it may write).
    pub async fn run(self: Arc<Self>, clock: impl Clock + 'static) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = clock.now();
            let guards = Arc::clone(&self);
            if let Err(error) = tokio::task::spawn_blocking(move || guards.check_all(now)).await {
                tracing::error!(%error, "a pass of the guards failed");
            }
        }
    }

    /// Check every guarded flag that is due at `now`.
    pub fn check_all(&self, now: Now) -> Pass {
        // Alone: always decide, with no token. In a fleet: only the lease's holder.
        let acting = match &self.lease {
            None => Some(None),
            Some(lease) => {
                let token = lease.tick(now.instant);
                self.state.gateway().metrics.set_fleet_leader(token.is_some());
                token.map(Some)
            }
        };
        let current = self.state.current();
        let mut pass = Pass::default();
        let mut seen = HashSet::new();
        for (flag, doc) in &current.docs.flags {
            let Some(raw) = doc.get("guard") else { continue };
            seen.insert(flag.clone());
            let changed_at = current.flag_revisions.get(flag).copied();
            // A flag no revision is recorded for (a state from before they were) is
            // compiled again whenever anything changes.
            let compiled = lock(&self.compiled).get(flag, changed_at.unwrap_or(current.revision), raw);
            match compiled.as_ref() {
                Ok(guard) => {
                    let revisions = Revisions { current: current.revision, changed_at: changed_at.unwrap_or(0) };
                    self.check(flag, doc, guard, revisions, now, acting, &mut pass);
                }
                Err(error) => {
                    self.report_invalid(flag, raw, error, now);
                    pass.invalid.push(flag.clone());
                }
            }
        }
        lock(&self.compiled).retain(|f| seen.contains(f));
        lock(&self.windows).retain(|f, _| seen.contains(f));
        lock(&self.status).retain(|f, _| seen.contains(f));
        pass
    }

    /// Check one guard if it is due: test each metric, publish the status, then act.
    #[allow(clippy::too_many_arguments)]
    fn check(
        &self,
        flag: &str,
        doc: &Value,
        guard: &Compiled,
        revisions: Revisions,
        now: Now,
        acting: Option<Option<u64>>,
        pass: &mut Pass,
    ) {
        let metrics = Arc::clone(&self.state.gateway().metrics);
        let Some(arms) = self.window(flag, guard, revisions.changed_at, &metrics, now) else { return };
        pass.checked.push(flag.to_string());
        let evaluated: Vec<Evaluated> = guard.metrics.iter().map(|m| check::evaluate(m, &arms, guard)).collect();
        self.publish(flag, guard, &evaluated, &metrics, now);
        let srm = guard.config.srm_check.then(|| check::sample_ratio(doc, guard, &arms)).flatten();
        self.note_health(flag, &arms, &evaluated, srm);
        if guard.config.state != GuardState::Armed {
            return;
        }
        // Not the fleet's leader: the status is shown, the leader decides.
        let Some(fence) = acting else { return };
        let at = At { revision: revisions.current, fence };
        if let Some(p) = srm.filter(|p| *p < check::SRM_ALPHA) {
            pass.wrote.extend(self.pause_for_srm(flag, doc, guard, at, &arms, p, now));
            return;
        }
        let wrote = match trip_event(flag, guard, &arms, &evaluated) {
            Some(event) => self.trip(flag, doc, guard, at, event, now),
            None => self.ramp(flag, doc, guard, at, arms.samples(), now),
        };
        pass.wrote.extend(wrote);
    }

    /// The arms over the flag's current window, if a check is due; a new step (or new
    /// arms, or a new state) starts a new window.
    fn window(&self, flag: &str, guard: &Compiled, changed_at: u64, metrics: &Metrics, now: Now) -> Option<Arms> {
        let g = &guard.config;
        let control = metrics.totals(flag, &g.control);
        let treatment = metrics.totals(flag, &g.treatment);
        let identity = Identity::of(guard, changed_at);
        let mut windows = lock(&self.windows);
        if !windows.get(flag).is_some_and(|w| w.belongs_to(&identity)) {
            let (c, t) = self.baseline(flag, &identity, &control, &treatment);
            windows.insert(flag.to_string(), Window::start(identity, c, t));
        }
        let window = windows.get_mut(flag)?;
        window.advance(&control, &treatment, g.check_interval.0, g.min_samples, now.instant)
    }

    /// Where a new window starts: the arms' totals now — in a fleet, the totals the first
    /// instance to start this window saw (kept in Redis), so that every instance, and a
    /// leader elected later, judges on the same window. Redis away: this instance's view.
    fn baseline(
        &self,
        flag: &str,
        identity: &Identity,
        control: &GuardSnapshot,
        treatment: &GuardSnapshot,
    ) -> (GuardSnapshot, GuardSnapshot) {
        let Some(lease) = &self.lease else { return (control.clone(), treatment.clone()) };
        let id = event_id(flag, 0, "window", &format!("{identity:?}"));
        match crate::fleet::stats::shared_baseline(lease.store(), flag, &id, control, treatment) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(flag, error = %e, "the window's shared start cannot be read: this instance's view");
                (control.clone(), treatment.clone())
            }
        }
    }

    /// The check's status (`/admin/v1/guards`) and gauges.
    fn publish(&self, flag: &str, guard: &Compiled, evaluated: &[Evaluated], metrics: &Metrics, now: Now) {
        let g = &guard.config;
        for e in evaluated {
            metrics.set_guard_state(flag, &e.name, guard_value(g.state, e.decision));
            metrics.guard_trips_seen(flag, &e.name);
        }
        let status = FlagStatus {
            flag: flag.to_string(),
            state: g.state.as_str().into(),
            control: g.control.clone(),
            treatment: g.treatment.clone(),
            step: (!g.ramp.is_empty()).then_some(g.step),
            steps: (!g.ramp.is_empty()).then_some(g.ramp.len()),
            percent: g.ramp.get(g.step).map(|s| s.percent),
            checked_at: Some(now.rfc3339()),
            metrics: evaluated.iter().map(MetricStatus::of).collect(),
            error: None,
            last_trip: None,
            srm_p_value: None,
            health: Vec::new(),
        };
        lock(&self.status).insert(flag.to_string(), status);
    }

    /// The window's health, in the status.
    fn note_health(&self, flag: &str, arms: &Arms, evaluated: &[Evaluated], srm: Option<f64>) {
        let mut health = Vec::new();
        let (c, t) = (arms.control.requests, arms.treatment.requests);
        if c == 0 && t == 0 {
            health.push("no traffic".to_string());
        } else {
            for e in evaluated.iter().filter(|e| e.samples.0 == 0 || e.samples.1 == 0) {
                health.push(format!("no samples for {} in an arm", e.name));
            }
        }
        let random = arms.control.random_context + arms.treatment.random_context;
        if random > 0 {
            let share = 100.0 * random as f64 / (c + t).max(1) as f64;
            health.push(format!(
                "{share:.1}% of requests named no context: they bucket by random keys, so one user may see both arms"
            ));
        }
        if srm.is_some_and(|p| p < check::SRM_ALPHA) {
            health.push("sample ratio mismatch: the arms are not the groups the allocation made".into());
        }
        if let Some(s) = lock(&self.status).get_mut(flag) {
            s.srm_p_value = srm;
            s.health = health;
        }
    }

    /// The arms' requests do not match their shares: the comparison is of unlike groups.
    /// Pause (through the write path, audited) and notify; a person resumes.
    #[allow(clippy::too_many_arguments)]
    fn pause_for_srm(
        &self,
        flag: &str,
        doc: &Value,
        guard: &Compiled,
        at: At,
        arms: &Arms,
        p: f64,
        now: Now,
    ) -> Option<u64> {
        let g = &guard.config;
        let mut new = doc.clone();
        new["guard"]["state"] = json!(GuardState::Paused.as_str());
        let (c, t) = (arms.control.requests, arms.treatment.requests);
        let reason = format!(
            "guard: sample ratio mismatch between {} ({c} requests) and {} ({t} requests) against their shares of the fallthrough (p = {p:.2e} < {}): the test would compare unlike groups; paused",
            g.control, g.treatment, check::SRM_ALPHA
        );
        let id = event_id(flag, at.revision, "srm", "");
        let revision = self.write(flag, new, at, reason, now.wall)?;
        if let Some(s) = lock(&self.status).get_mut(flag) {
            s.state = GuardState::Paused.as_str().into();
        }
        tracing::warn!(flag, p, "guard paused: sample ratio mismatch");
        let (control_samples, treatment_samples) = arms.samples();
        let event = Event {
            event: "srm",
            flag: flag.to_string(),
            metric: None,
            estimate: Some(p),
            interval: None,
            lambda: None,
            control_samples,
            treatment_samples,
            action: "paused: sample ratio mismatch".into(),
            trip_id: Some(id),
        };
        self.notify(guard, event);
        Some(revision)
    }

    /// The status of a guard that does not compile.
    fn report_invalid(&self, flag: &str, raw: &Value, error: &str, now: Now) {
        let text = |field: &str| raw.get(field).and_then(Value::as_str).unwrap_or_default().to_string();
        let status = FlagStatus {
            flag: flag.to_string(),
            state: "invalid".into(),
            control: text("control"),
            treatment: text("treatment"),
            step: None,
            steps: None,
            percent: None,
            checked_at: Some(now.rfc3339()),
            metrics: Vec::new(),
            error: Some(error.to_string()),
            last_trip: None,
            srm_p_value: None,
            health: Vec::new(),
        };
        lock(&self.status).insert(flag.to_string(), status);
    }

    /// Roll the treatment back (or pause), through the write path.
    fn trip(&self, flag: &str, doc: &Value, guard: &Compiled, at: At, mut event: Event, now: Now) -> Option<u64> {
        let g = &guard.config;
        let mut new = doc.clone();
        let metric = event.metric.clone().unwrap_or_else(|| "?".into());
        let metric = metric.as_str();
        let state = match g.on_trip {
            OnTrip::Rollback => {
                // What `dismiss` puts back if the trip is judged a false alarm.
                new["guard"]["before_trip"] = json!({"fallthrough": doc["fallthrough"], "rules": doc["rules"]});
                move_traffic(&mut new, &g.treatment, &g.control);
                event.action = format!("rolled back: {}'s traffic goes to {}", g.treatment, g.control);
                GuardState::RolledBack
            }
            OnTrip::Pause => {
                event.action = "paused the ramp".into();
                GuardState::Paused
            }
        };
        new["guard"]["state"] = json!(state.as_str());
        let reason = format!(
            "guard: {metric} of {} regressed against {}: estimate {}, interval {}, Λ {}, samples control {} / treatment {}; {}",
            g.treatment,
            g.control,
            event.estimate.map_or("-".into(), |v| format!("{v:.5}")),
            event.interval.map_or("-".into(), |[a, b]| format!("[{a:.5}, {b:.5}]")),
            event.lambda.map_or("-".into(), |v| format!("{v:.3e}")),
            event.control_samples,
            event.treatment_samples,
            event.action
        );
        // The same trip — this flag, at this revision, on this metric — has the same id
        // whichever instance makes it and however often its webhook is retried.
        let id = event_id(flag, at.revision, "trip", metric);
        let reason = format!("{reason}; trip {id}");
        event.trip_id = Some(id);
        let revision = self.write(flag, new, at, reason.clone(), now.wall)?;
        let trip = LastTrip { at: now.rfc3339(), revision, metric: metric.to_string().into(), reason };
        lock(&self.trips).insert(flag.to_string(), trip);
        let metrics = &self.state.gateway().metrics;
        metrics.guard_tripped(flag, metric);
        for m in &guard.metrics {
            metrics.set_guard_state(flag, &m.name, guard_value(state, Decision::Trip));
        }
        if let Some(s) = lock(&self.status).get_mut(flag) {
            s.state = state.as_str().into();
        }
        tracing::warn!(flag, metric, action = %event.action, "guard tripped");
        self.notify(guard, event);
        Some(revision)
    }

    /// Start the ramp, or move to its next step when the step is done at `now`.
    fn ramp(&self, flag: &str, doc: &Value, guard: &Compiled, at: At, samples: (u64, u64), now: Now) -> Option<u64> {
        let g = &guard.config;
        let step = g.ramp.get(g.step)?;
        let (next, percent) = match guard.step_started {
            // The ramp has not started: apply its first (or current) step.
            None => (g.step, step.percent),
            Some(at) => {
                let elapsed = now.wall.duration_since(at).unwrap_or_default();
                let done =
                    elapsed >= step.min_duration.0 && samples.0 >= step.min_samples && samples.1 >= step.min_samples;
                match g.ramp.get(g.step + 1) {
                    Some(next) if done => (g.step + 1, next.percent),
                    _ => return None,
                }
            }
        };
        let mut new = doc.clone();
        set_share(&mut new, &g.control, &g.treatment, percent);
        new["guard"]["step"] = json!(next);
        new["guard"]["step_started"] = json!(now.rfc3339());
        let reason = format!("guard: ramp step {} — {} gets {percent}% of the fallthrough", next + 1, g.treatment);
        let id = event_id(flag, at.revision, "ramp", &next.to_string());
        let revision = self.write(flag, new, at, reason, now.wall)?;
        let event = Event {
            event: "ramp",
            flag: flag.to_string(),
            metric: None,
            estimate: None,
            interval: None,
            lambda: None,
            control_samples: samples.0,
            treatment_samples: samples.1,
            action: format!("step {} at {percent}%", next + 1),
            trip_id: Some(id),
        };
        self.notify(guard, event);
        Some(revision)
    }

    /// Apply `doc` as the flag's new document, against `revision`, audited at `at`.
    fn write(&self, flag: &str, doc: Value, at: At, reason: String, time: SystemTime) -> Option<u64> {
        let request = Request { actor: "guard".into(), reason, if_match: Some(at.revision), fence: at.fence };
        let state = doc["guard"]["state"].clone();
        match self.state.apply_at(Change::ReplaceFlag { flag: flag.to_string(), value: doc }, &request, time) {
            Ok(applied) => Some(applied.revision),
            // Someone changed the configuration meanwhile: look again at the next tick.
            Err(ChangeError::Stale { .. }) => None,
            // The store did not answer after the request reached it: whether the change was
            // made shows when the change log brings the next revision (or another one).
            Err(ChangeError::Store(crate::state::StoreError::Unknown(why))) => {
                tracing::warn!(flag, error = %why, "the guard's change may have been made: waiting for the change log to tell");
                let deadline = std::time::Instant::now() + UNSURE_WAIT;
                while std::time::Instant::now() < deadline {
                    let current = self.state.current();
                    if current.revision > at.revision {
                        let made = current.flag_revisions.get(flag) == Some(&(at.revision + 1))
                            && current.docs.flags.get(flag).is_some_and(|d| d["guard"]["state"] == state);
                        return made.then_some(at.revision + 1);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                None
            }
            Err(ChangeError::Store(e @ crate::state::StoreError::Fenced { .. })) => {
                tracing::warn!(flag, error = %e, "the guard's change was refused: this instance no longer leads the fleet");
                None
            }
            Err(e) => {
                tracing::error!(flag, error = %e, "the guard could not apply its change");
                None
            }
        }
    }

    /// POST the event to the guard's webhook, off the data plane, with retries.
    fn notify(&self, guard: &Compiled, event: Event) {
        let Some(url) = guard.config.webhook.clone() else { return };
        let client = self.webhooks.clone();
        self.runtime.spawn(async move {
            let body = serde_json::to_vec(&event).unwrap_or_default();
            let id = event.trip_id.clone();
            let mut delay = Duration::from_millis(500);
            for attempt in 1..=4 {
                match post(&client, &url, body.clone(), id.as_deref()).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(url = %url, attempt, error = %e, "guard webhook failed"),
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        });
    }
}

/// The trip a check calls for, if any: the circuit breaker first, then the first metric
/// whose test trips.
fn trip_event(flag: &str, guard: &Compiled, arms: &Arms, evaluated: &[Evaluated]) -> Option<Event> {
    let (control_samples, treatment_samples) = arms.samples();
    let event = |metric: String, estimate: f64| Event {
        event: "trip",
        flag: flag.to_string(),
        metric: Some(metric),
        estimate: Some(estimate),
        interval: None,
        lambda: None,
        control_samples,
        treatment_samples,
        action: String::new(),
        trip_id: None,
    };
    if let Some(rate) = check::breaker(guard, arms) {
        return Some(event("circuit_breaker".into(), rate));
    }
    let tripped = evaluated.iter().find(|e| e.decision == Decision::Trip)?;
    let e = &tripped.estimate;
    // The metric's own samples (a judge's scores, feedback), not the arms' requests.
    let (control_samples, treatment_samples) = tripped.samples;
    Some(Event {
        interval: Some([e.low, e.high]),
        lambda: Some(e.lambda),
        control_samples,
        treatment_samples,
        ..event(tripped.name.to_string(), e.delta)
    })
}

/// How long a guard's write whose outcome is unknown waits for the change log to tell.
const UNSURE_WAIT: Duration = Duration::from_secs(3);

/// How long one webhook attempt may take, connecting included.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

async fn post(client: &HttpsClient, url: &str, body: Vec<u8>, id: Option<&str>) -> Result<(), String> {
    use http_body_util::Full;
    let mut req = http::Request::post(url).header("content-type", "application/json");
    if let Some(id) = id {
        req = req.header("idempotency-key", id);
    }
    let req = req.body(Full::new(bytes::Bytes::from(body))).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(WEBHOOK_TIMEOUT, client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", resp.status()))
    }
}

fn decision_str(d: Decision) -> &'static str {
    match d {
        Decision::Insufficient => "insufficient",
        Decision::Pass => "pass",
        Decision::Trip => "trip",
    }
}

/// The gauge value of a guard metric: 0 pass, 1 insufficient data, 2 tripped or paused,
/// 3 rolled back.
fn guard_value(state: GuardState, decision: Decision) -> i64 {
    match (state, decision) {
        (GuardState::RolledBack, _) => 3,
        (GuardState::Paused, _) | (_, Decision::Trip) => 2,
        (_, Decision::Insufficient) => 1,
        (_, Decision::Pass) => 0,
    }
}
