//! Evaluation: which variation a context gets, and why — LaunchDarkly's server-side
//! semantics, on a compiled [`FlagSet`]. Nothing here allocates: results borrow from
//! the flag set, recursion guards live on the stack, and hashing is fed piece by piece.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::bucket::{bucket, bucketable};
use super::compile::{CClause, CRollout, CSegment, FlagIndex, FlagSet, KeySet, Op, Outcome, ValueSet};
use super::context::{AttrRef, Context, Found, Single};
use super::semver::SemVer;
use super::trace::{NoTrace, Trace};

/// Why an evaluation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    FlagNotFound,
    MalformedFlag,
    UserNotSpecified,
    WrongType,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorKind::MalformedFlag => "MALFORMED_FLAG",
            ErrorKind::UserNotSpecified => "USER_NOT_SPECIFIED",
            ErrorKind::WrongType => "WRONG_TYPE",
        }
    }
}

/// Why a context got its variation (LaunchDarkly's evaluation reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason<'a> {
    Off,
    TargetMatch,
    RuleMatch { rule_index: usize, rule_id: &'a str, in_experiment: bool },
    Fallthrough { in_experiment: bool },
    PrerequisiteFailed { prerequisite_key: &'a str },
    Error(ErrorKind),
}

impl Reason<'_> {
    /// The reason's `kind` in LaunchDarkly's JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::Off => "OFF",
            Reason::TargetMatch => "TARGET_MATCH",
            Reason::RuleMatch { .. } => "RULE_MATCH",
            Reason::Fallthrough { .. } => "FALLTHROUGH",
            Reason::PrerequisiteFailed { .. } => "PREREQUISITE_FAILED",
            Reason::Error(_) => "ERROR",
        }
    }

    /// LaunchDarkly's JSON form, e.g. `{"kind":"RULE_MATCH","ruleIndex":0,"ruleId":"r"}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), self.kind().into());
        match *self {
            Reason::RuleMatch { rule_index, rule_id, in_experiment } => {
                m.insert("ruleIndex".into(), rule_index.into());
                m.insert("ruleId".into(), rule_id.into());
                if in_experiment {
                    m.insert("inExperiment".into(), true.into());
                }
            }
            Reason::Fallthrough { in_experiment: true } => {
                m.insert("inExperiment".into(), true.into());
            }
            Reason::PrerequisiteFailed { prerequisite_key } => {
                m.insert("prerequisiteKey".into(), prerequisite_key.into());
            }
            Reason::Error(kind) => {
                m.insert("errorKind".into(), kind.as_str().into());
            }
            _ => {}
        }
        Value::Object(m)
    }
}

/// The result of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detail<'a> {
    /// The variation's value; `None` on error or when an off flag has no off variation
    /// (the caller's default applies).
    pub value: Option<&'a Value>,
    pub variation_index: Option<usize>,
    pub reason: Reason<'a>,
}

impl<'a> Detail<'a> {
    fn error(kind: ErrorKind) -> Self {
        Detail { value: None, variation_index: None, reason: Reason::Error(kind) }
    }
}

/// Deepest prerequisite chain or segment nesting followed before giving up (a longer
/// chain is treated as a cycle). Bounds the fixed-size guards below.
pub(crate) const MAX_DEPTH: usize = 32;

/// A fixed-capacity stack of indexes, for cycle detection without allocating.
struct Visiting {
    items: [usize; MAX_DEPTH],
    len: usize,
}

impl Visiting {
    fn new() -> Self {
        Visiting { items: [0; MAX_DEPTH], len: 0 }
    }
    fn contains(&self, i: usize) -> bool {
        self.items[..self.len].contains(&i)
    }
    /// Push, or `false` when full.
    fn push(&mut self, i: usize) -> bool {
        if self.len == MAX_DEPTH {
            return false;
        }
        self.items[self.len] = i;
        self.len += 1;
        true
    }
    fn pop(&mut self) {
        self.len = self.len.saturating_sub(1);
    }
}

/// A `MALFORMED_FLAG` condition found while matching.
#[derive(Debug, Clone, Copy)]
struct Malformed;

impl FlagSet {
    /// Evaluate flag `key` for `context`.
    pub fn evaluate(&self, key: &str, context: &Context) -> Detail<'_> {
        match self.index(key) {
            Some(i) => self.evaluate_index(i, context),
            None => Detail::error(ErrorKind::FlagNotFound),
        }
    }

    /// Evaluate the flag at `index` (resolved once with [`FlagSet::index`]).
    pub fn evaluate_index(&self, index: FlagIndex, context: &Context) -> Detail<'_> {
        self.evaluate_traced(index, context, &mut NoTrace)
    }

    /// Evaluate, reporting each step to `trace` (see `sluice eval --explain`).
    pub fn evaluate_traced<T: Trace>(&self, index: FlagIndex, context: &Context, trace: &mut T) -> Detail<'_> {
        let mut flags = Visiting::new();
        let mut eval = Eval { set: self, context, trace, segments: Visiting::new() };
        match eval.flag(index.0, &mut flags) {
            Ok(detail) => detail,
            Err(Malformed) => Detail::error(ErrorKind::MalformedFlag),
        }
    }
}

struct Eval<'s, 'c, T> {
    set: &'s FlagSet,
    context: &'c Context,
    trace: &'c mut T,
    segments: Visiting,
}

impl<'s, T: Trace> Eval<'s, '_, T> {
    fn flag(&mut self, index: usize, visiting: &mut Visiting) -> Result<Detail<'s>, Malformed> {
        let flag = &self.set.flags[index];
        if !visiting.push(index) {
            return Err(Malformed);
        }
        let result = self.flag_inner(index, visiting);
        visiting.pop();
        let detail = result?;
        self.trace.result(&flag.key, &detail);
        Ok(detail)
    }

    fn variation(&self, index: usize, v: i64, reason: Reason<'s>) -> Result<Detail<'s>, Malformed> {
        let flag = &self.set.flags[index];
        let i = usize::try_from(v).map_err(|_| Malformed)?;
        let value = flag.variations.get(i).ok_or(Malformed)?;
        Ok(Detail { value: Some(value), variation_index: Some(i), reason })
    }

    fn off(&self, index: usize, reason: Reason<'s>) -> Result<Detail<'s>, Malformed> {
        match self.set.flags[index].off_variation {
            Some(v) => self.variation(index, v, reason),
            None => Ok(Detail { value: None, variation_index: None, reason }),
        }
    }

    fn flag_inner(&mut self, index: usize, visiting: &mut Visiting) -> Result<Detail<'s>, Malformed> {
        let flag = &self.set.flags[index];
        if !flag.on {
            self.trace.step(format_args!("flag `{}` is off", flag.key));
            return self.off(index, Reason::Off);
        }
        for p in &flag.prerequisites {
            let Some(pi) = p.flag else {
                self.trace.step(format_args!("prerequisite `{}` does not exist", p.key));
                return self.off(index, Reason::PrerequisiteFailed { prerequisite_key: &p.key });
            };
            if visiting.contains(pi) {
                self.trace.step(format_args!("prerequisite `{}` is part of a cycle", p.key));
                return Err(Malformed);
            }
            let result = self.flag(pi, visiting)?;
            let ok = self.set.flags[pi].on && result.variation_index.is_some_and(|i| i as i64 == p.variation);
            if !ok {
                self.trace.step(format_args!("prerequisite `{}` did not give variation {}", p.key, p.variation));
                return self.off(index, Reason::PrerequisiteFailed { prerequisite_key: &p.key });
            }
        }
        for t in &flag.targets {
            if let Some(single) = self.context.get(&t.kind) {
                if t.values.contains(&*single.key) {
                    self.trace.step(format_args!("the `{}` key `{}` is targeted individually", t.kind, single.key));
                    return self.variation(index, t.variation, Reason::TargetMatch);
                }
            }
        }
        for (rule_index, rule) in flag.rules.iter().enumerate() {
            if self.clauses(&rule.clauses)? {
                self.trace.step(format_args!("rule {rule_index} (`{}`) matches", rule.id));
                return self.outcome(index, &rule.outcome, |in_experiment| Reason::RuleMatch {
                    rule_index,
                    rule_id: &rule.id,
                    in_experiment,
                });
            }
            self.trace.step(format_args!("rule {rule_index} (`{}`) does not match", rule.id));
        }
        self.trace.step(format_args!("no target or rule matched: fallthrough"));
        self.outcome(index, &flag.fallthrough, |in_experiment| Reason::Fallthrough { in_experiment })
    }

    fn outcome(
        &mut self,
        index: usize,
        outcome: &'s Outcome,
        reason: impl Fn(bool) -> Reason<'s>,
    ) -> Result<Detail<'s>, Malformed> {
        match outcome {
            Outcome::Variation(v) => self.variation(index, *v, reason(false)),
            Outcome::Rollout(r) => {
                let (v, in_experiment) = self.rollout(r)?;
                self.variation(index, v, reason(in_experiment))
            }
            Outcome::Malformed => Err(Malformed),
        }
    }

    /// The variation a rollout gives, and whether the context is in an experiment.
    fn rollout(&mut self, r: &CRollout) -> Result<(i64, bool), Malformed> {
        let bucket_by = if r.experiment { None } else { Some(r.bucket_by.as_ref().ok_or(Malformed)?) };
        let (b, found) = self.bucket(&r.context_kind, bucket_by, &r.prefix);
        self.trace.step(format_args!("bucket value {b:.8} in the `{}` rollout", r.context_kind));
        let mut sum = 0f32;
        for wv in &r.variations {
            sum += wv.weight as f32 / 100_000.0;
            if b < sum {
                return Ok((wv.variation, r.experiment && found && !wv.untracked));
            }
        }
        // Weights short of 100%: the last variation takes the rest.
        let last = r.variations.last().ok_or(Malformed)?;
        Ok((last.variation, r.experiment && found && !last.untracked))
    }

    /// The context's bucket, and whether it has the rollout's kind at all.
    fn bucket(&self, kind: &str, bucket_by: Option<&AttrRef>, prefix: &str) -> (f32, bool) {
        let Some(single) = self.context.get(kind) else {
            return (0.0, false);
        };
        let mut buf = [0u8; 24];
        let id = match bucket_by {
            None => Some(&*single.key),
            Some(attr) => match attr.get(single) {
                Some(Found::Str(s)) => Some(s),
                Some(Found::Value(v)) => bucketable(v, &mut buf),
                _ => None,
            },
        };
        (id.map_or(0.0, |id| bucket(prefix, id)), true)
    }

    fn clauses(&mut self, clauses: &[CClause]) -> Result<bool, Malformed> {
        for (i, c) in clauses.iter().enumerate() {
            if !self.clause(c)? {
                let not = if c.negate { "not " } else { "" };
                if let Op::SegmentMatch(segments) = &c.op {
                    let keys = segments.iter().map(|&s| &*self.set.segments[s].key);
                    let first = keys.clone().next().unwrap_or("?");
                    let more = if keys.count() > 1 { " (or another listed segment)" } else { "" };
                    self.trace.step(format_args!("  clause {i} ({not}in segment `{first}`{more}) does not match"));
                } else {
                    let attr = c.attr.as_ref().map_or("?", AttrRef::first);
                    let op = c.op.name();
                    self.trace
                        .step(format_args!("  clause {i} ({} `{attr}` {not}{op}) does not match", c.context_kind));
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn clause(&mut self, c: &CClause) -> Result<bool, Malformed> {
        if let Op::SegmentMatch(segments) = &c.op {
            for &s in segments {
                if self.segment(s)? {
                    return Ok(!c.negate);
                }
            }
            return Ok(c.negate);
        }
        let attr = c.attr.as_ref().ok_or(Malformed)?;
        if attr.is_kind() {
            let any = self.context.kinds().iter().any(|s| matches_found(&c.op, Found::Str(&s.kind)));
            return Ok(any != c.negate);
        }
        let Some(single) = self.context.get(&c.context_kind) else {
            return Ok(false);
        };
        let matched = match attr.get(single) {
            None | Some(Found::Value(Value::Null)) => return Ok(false),
            Some(Found::Value(Value::Array(items))) => items.iter().any(|v| matches_found(&c.op, Found::Value(v))),
            Some(found) => matches_found(&c.op, found),
        };
        Ok(matched != c.negate)
    }

    fn segment(&mut self, index: usize) -> Result<bool, Malformed> {
        if self.segments.contains(index) || !self.segments.push(index) {
            return Err(Malformed);
        }
        let result = self.segment_inner(&self.set.segments[index]);
        self.segments.pop();
        result
    }

    fn segment_inner(&mut self, s: &'s CSegment) -> Result<bool, Malformed> {
        if let Some(user) = self.context.get("user") {
            if s.included.contains(&*user.key) {
                return Ok(true);
            }
        }
        if in_targets(self.context, &s.included_contexts) {
            return Ok(true);
        }
        if let Some(user) = self.context.get("user") {
            if s.excluded.contains(&*user.key) {
                return Ok(false);
            }
        }
        if in_targets(self.context, &s.excluded_contexts) {
            return Ok(false);
        }
        for rule in &s.rules {
            if !self.clauses(&rule.clauses)? {
                continue;
            }
            let Some(weight) = rule.weight else { return Ok(true) };
            let attr = rule.bucket_by.as_ref().ok_or(Malformed)?;
            let (b, _) = self.bucket(&rule.context_kind, Some(attr), &s.prefix);
            if b < weight {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn in_targets(context: &Context, targets: &[(Box<str>, KeySet)]) -> bool {
    targets.iter().any(|(kind, keys)| context.get(kind).is_some_and(|s: &Single| keys.contains(&*s.key)))
}

/// Whether one context value satisfies the operator against any clause value.
fn matches_found(op: &Op, found: Found<'_>) -> bool {
    let text = match found {
        Found::Str(s) => Some(s),
        Found::Value(Value::String(s)) => Some(s.as_str()),
        _ => None,
    };
    let number = match found {
        Found::Value(Value::Number(n)) => n.as_f64(),
        _ => None,
    };
    match op {
        Op::In(set) => in_set(set, found),
        Op::StartsWith(vs) => text.is_some_and(|t| vs.iter().any(|v| t.starts_with(&**v))),
        Op::EndsWith(vs) => text.is_some_and(|t| vs.iter().any(|v| t.ends_with(&**v))),
        Op::Contains(vs) => text.is_some_and(|t| vs.iter().any(|f| f.find(t.as_bytes()).is_some())),
        Op::Matches(rs) => text.is_some_and(|t| rs.iter().any(|r| r.is_match(t))),
        Op::LessThan(vs) => number.is_some_and(|n| vs.iter().any(|v| n < *v)),
        Op::LessThanOrEqual(vs) => number.is_some_and(|n| vs.iter().any(|v| n <= *v)),
        Op::GreaterThan(vs) => number.is_some_and(|n| vs.iter().any(|v| n > *v)),
        Op::GreaterThanOrEqual(vs) => number.is_some_and(|n| vs.iter().any(|v| n >= *v)),
        Op::Before(vs) | Op::After(vs) => {
            let date = match found {
                Found::Value(v) => super::compile::date_millis(v),
                _ => None,
            };
            let before = matches!(op, Op::Before(_));
            date.is_some_and(|d| vs.iter().any(|v| if before { d < *v } else { d > *v }))
        }
        Op::SemVerEqual(vs) | Op::SemVerLessThan(vs) | Op::SemVerGreaterThan(vs) => {
            let Some(version) = text.and_then(SemVer::parse) else {
                return false;
            };
            let want = match op {
                Op::SemVerEqual(_) => Ordering::Equal,
                Op::SemVerLessThan(_) => Ordering::Less,
                _ => Ordering::Greater,
            };
            vs.iter().any(|v| version.cmp(&v.as_ref()) == want)
        }
        Op::SegmentMatch(_) | Op::Unknown => false,
    }
}

fn in_set(set: &ValueSet, found: Found<'_>) -> bool {
    match found {
        Found::Str(s) => set.strings.contains(s),
        Found::Bool(b) => set.bools[usize::from(b)],
        Found::Value(Value::String(s)) => set.strings.contains(s.as_str()),
        Found::Value(Value::Number(n)) => n.as_f64().is_some_and(|n| set.numbers.contains(&n)),
        Found::Value(Value::Bool(b)) => set.bools[usize::from(*b)],
        Found::Value(Value::Null) => false,
        Found::Value(v) => set.others.iter().any(|o| json_eq(o, v)),
    }
}

/// JSON equality with numbers compared by value (`1 == 1.0`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}
