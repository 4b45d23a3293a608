//! Compile flag data once into the form evaluation uses: attribute references parsed,
//! regexes, versions and dates parsed, `in` values hashed, segment and prerequisite
//! references resolved to indexes, bucketing prefixes built.
//!
//! Compilation never fails: it keeps LaunchDarkly's semantics for bad data (a bad regex
//! never matches, an out-of-range variation is a `MALFORMED_FLAG` error when reached)
//! and reports every such problem, with the flag or segment key and the field, in
//! [`FlagSet::problems`]. sluice's own config refuses data with problems; LaunchDarkly
//! JSON is accepted as LaunchDarkly accepts it, with the problems shown as warnings.

use std::collections::{HashMap, HashSet};

use memchr::memmem::Finder;
use std::fmt;

use regex::Regex;
use serde_json::Value;

use super::context::{valid_kind, AttrRef};
use super::eval::MAX_DEPTH;
use super::model::{self, Clause, FlagData, Rollout};
use super::semver::{OwnedSemVer, SemVer};

/// A set of keys or strings, looked up on every evaluation. foldhash is several times
/// cheaper than SipHash for short keys; the sets are built from configuration only, so
/// flooding is not a concern, and `RandomState` still seeds each set differently.
pub(super) type KeySet = HashSet<Box<str>, foldhash::fast::RandomState>;

/// A problem in flag data, located by flag or segment key and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `flags.<key>` or `segments.<key>`.
    pub item: String,
    /// The field within it, e.g. `rules[2].clauses[0].values[1]`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.item, self.message)
        } else {
            write!(f, "{}.{}: {}", self.item, self.field, self.message)
        }
    }
}

/// Compiled flags and segments; immutable, shared by every evaluation.
#[derive(Debug, Default)]
pub struct FlagSet {
    pub(super) flags: Vec<CFlag>,
    pub(super) by_key: HashMap<Box<str>, usize>,
    pub(super) segments: Vec<CSegment>,
    problems: Vec<Problem>,
}

/// An index of a flag in a [`FlagSet`], resolved once so the request path skips the
/// key lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlagIndex(pub(super) usize);

#[derive(Debug)]
pub(super) struct CFlag {
    pub key: Box<str>,
    pub on: bool,
    pub prerequisites: Vec<CPrereq>,
    pub targets: Vec<CTarget>,
    pub rules: Vec<CRule>,
    pub fallthrough: Outcome,
    pub off_variation: Option<i64>,
    pub variations: Vec<Value>,
}

#[derive(Debug)]
pub(super) struct CPrereq {
    pub key: Box<str>,
    pub flag: Option<usize>,
    pub variation: i64,
}

#[derive(Debug)]
pub(super) struct CTarget {
    pub kind: Box<str>,
    pub values: KeySet,
    pub variation: i64,
}

#[derive(Debug)]
pub(super) struct CRule {
    pub id: Box<str>,
    pub clauses: Vec<CClause>,
    pub outcome: Outcome,
}

/// What a target, rule or fallthrough serves.
#[derive(Debug)]
pub(super) enum Outcome {
    Variation(i64),
    Rollout(CRollout),
    /// Neither a variation nor a rollout (or an empty rollout): `MALFORMED_FLAG`.
    Malformed,
}

#[derive(Debug)]
pub(super) struct CRollout {
    pub experiment: bool,
    pub context_kind: Box<str>,
    /// `None` when the reference is malformed (a `MALFORMED_FLAG` error when reached).
    pub bucket_by: Option<AttrRef>,
    /// `flagKey.salt`, or the seed in decimal.
    pub prefix: Box<str>,
    pub variations: Vec<model::WeightedVariation>,
}

#[derive(Debug)]
pub(super) struct CClause {
    pub context_kind: Box<str>,
    /// `None` when the reference is malformed (a `MALFORMED_FLAG` error when reached).
    pub attr: Option<AttrRef>,
    pub op: Op,
    pub negate: bool,
}

/// A clause operator with its values compiled for that operator. Values of the wrong
/// type for the operator are dropped: they can never match.
#[derive(Debug)]
pub(super) enum Op {
    In(ValueSet),
    StartsWith(Vec<Box<str>>),
    EndsWith(Vec<Box<str>>),
    /// Substring searchers, built once.
    Contains(Vec<Finder<'static>>),
    Matches(Vec<Regex>),
    LessThan(Vec<f64>),
    LessThanOrEqual(Vec<f64>),
    GreaterThan(Vec<f64>),
    GreaterThanOrEqual(Vec<f64>),
    /// Epoch milliseconds.
    Before(Vec<f64>),
    After(Vec<f64>),
    SemVerEqual(Vec<OwnedSemVer>),
    SemVerLessThan(Vec<OwnedSemVer>),
    SemVerGreaterThan(Vec<OwnedSemVer>),
    /// Segment indexes; a missing segment never matches.
    SegmentMatch(Vec<usize>),
    /// An operator sluice does not know: never matches.
    Unknown,
}

impl Op {
    /// LaunchDarkly's name of the operator.
    pub fn name(&self) -> &'static str {
        match self {
            Op::In(_) => "in",
            Op::StartsWith(_) => "startsWith",
            Op::EndsWith(_) => "endsWith",
            Op::Contains(_) => "contains",
            Op::Matches(_) => "matches",
            Op::LessThan(_) => "lessThan",
            Op::LessThanOrEqual(_) => "lessThanOrEqual",
            Op::GreaterThan(_) => "greaterThan",
            Op::GreaterThanOrEqual(_) => "greaterThanOrEqual",
            Op::Before(_) => "before",
            Op::After(_) => "after",
            Op::SemVerEqual(_) => "semVerEqual",
            Op::SemVerLessThan(_) => "semVerLessThan",
            Op::SemVerGreaterThan(_) => "semVerGreaterThan",
            Op::SegmentMatch(_) => "segmentMatch",
            Op::Unknown => "unknown operator",
        }
    }
}

/// The values of an `in` clause, split by type for allocation-free lookups.
#[derive(Debug, Default)]
pub(super) struct ValueSet {
    pub strings: KeySet,
    pub numbers: Vec<f64>,
    pub bools: [bool; 2],
    /// Arrays and objects, compared deeply (numbers by value).
    pub others: Vec<Value>,
}

#[derive(Debug)]
pub(super) struct CSegment {
    pub key: Box<str>,
    pub included: KeySet,
    pub excluded: KeySet,
    pub included_contexts: Vec<(Box<str>, KeySet)>,
    pub excluded_contexts: Vec<(Box<str>, KeySet)>,
    pub rules: Vec<CSegmentRule>,
    /// `segmentKey.salt`.
    pub prefix: Box<str>,
}

#[derive(Debug)]
pub(super) struct CSegmentRule {
    pub clauses: Vec<CClause>,
    /// As a fraction of 1, when the rule has a weight.
    pub weight: Option<f32>,
    pub bucket_by: Option<AttrRef>,
    pub context_kind: Box<str>,
}

impl FlagSet {
    /// Compile `data`. Problems are kept in [`FlagSet::problems`].
    pub fn compile(data: &FlagData) -> FlagSet {
        let mut problems = Vec::new();
        let live_segments: Vec<(&String, &model::Segment)> = data.segments.iter().filter(|(_, s)| !s.deleted).collect();
        let segment_index: HashMap<&str, usize> =
            live_segments.iter().enumerate().map(|(i, (k, _))| (k.as_str(), i)).collect();
        let live_flags: Vec<(&String, &model::Flag)> = data.flags.iter().filter(|(_, f)| !f.deleted).collect();
        let by_key: HashMap<Box<str>, usize> =
            live_flags.iter().enumerate().map(|(i, (k, _))| (k.as_str().into(), i)).collect();

        let segments = live_segments
            .iter()
            .map(|(key, s)| {
                let mut cx = Cx { item: format!("segments.{key}"), problems: &mut problems, segments: &segment_index };
                cx.segment(key, s)
            })
            .collect();
        let flags = live_flags
            .iter()
            .map(|(key, f)| {
                let mut cx = Cx { item: format!("flags.{key}"), problems: &mut problems, segments: &segment_index };
                cx.flag(key, f, &by_key)
            })
            .collect();
        let mut set = FlagSet { flags, by_key, segments, problems };
        set.find_cycles();
        set
    }

    /// Every problem found while compiling.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The index of flag `key`.
    pub fn index(&self, key: &str) -> Option<FlagIndex> {
        self.by_key.get(key).map(|&i| FlagIndex(i))
    }

    /// Flag keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.flags.iter().map(|f| &*f.key)
    }

    /// Whether what `reason` says was served is a percentage rollout (a split of the
    /// contexts, as OpenFeature's `SPLIT` reason means): a rule's or the fallthrough's.
    pub fn served_split(&self, index: FlagIndex, reason: &crate::flags::Reason<'_>) -> bool {
        let Some(f) = self.flags.get(index.0) else { return false };
        let outcome = match *reason {
            crate::flags::Reason::RuleMatch { rule_index, .. } => f.rules.get(rule_index).map(|r| &r.outcome),
            crate::flags::Reason::Fallthrough { .. } => Some(&f.fallthrough),
            _ => None,
        };
        matches!(outcome, Some(Outcome::Rollout(_)))
    }

    /// Whether the flag serves everyone the same way when on: no prerequisites, targets
    /// or rules (OpenFeature's `STATIC`).
    pub fn is_static(&self, index: FlagIndex) -> bool {
        self.flags
            .get(index.0)
            .is_some_and(|f| f.prerequisites.is_empty() && f.targets.is_empty() && f.rules.is_empty())
    }

    /// The variations of a flag.
    pub fn variations(&self, index: FlagIndex) -> &[Value] {
        self.flags.get(index.0).map_or(&[], |f| &f.variations)
    }

    /// Report prerequisite and segment cycles, and chains longer than evaluation follows
    /// ([`MAX_DEPTH`] flags, or segments, counting the first). Evaluation still detects
    /// them when it reaches them, as LaunchDarkly does.
    fn find_cycles(&mut self) {
        let prerequisites =
            |i: usize| -> Vec<usize> { self.flags[i].prerequisites.iter().filter_map(|p| p.flag).collect() };
        let nested_segments = |i: usize| -> Vec<usize> {
            let clauses = self.segments[i].rules.iter().flat_map(|r| &r.clauses);
            clauses
                .filter_map(|c| if let Op::SegmentMatch(s) = &c.op { Some(s) } else { None })
                .flatten()
                .copied()
                .collect()
        };
        let mut problems = Vec::new();
        let mut report = |item: String, field: &str, chain: Option<usize>, cycle: &str, what: &str| {
            let message = match chain {
                None => cycle.to_string(),
                Some(n) if n > MAX_DEPTH => {
                    format!("{what} chain is {n} long; evaluation follows at most {MAX_DEPTH}, counting this one")
                }
                Some(_) => return,
            };
            problems.push(Problem { item, field: field.into(), message });
        };
        for (i, chain) in chains(self.flags.len(), &prerequisites).into_iter().enumerate() {
            let item = format!("flags.{}", self.flags[i].key);
            report(item, "prerequisites", chain, "prerequisites form a cycle", "the prerequisite");
        }
        for (i, chain) in chains(self.segments.len(), &nested_segments).into_iter().enumerate() {
            let item = format!("segments.{}", self.segments[i].key);
            report(item, "rules", chain, "segments refer to each other in a cycle", "the nested segment");
        }
        self.problems.extend(problems);
    }
}

/// For each of `n` nodes, the length of the longest chain that starts there following
/// `next` (the node itself counted), or `None` when following it reaches a cycle.
/// Depth-first without recursion, each node visited once.
fn chains(n: usize, next: &dyn Fn(usize) -> Vec<usize>) -> Vec<Option<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; n];
    let mut len: Vec<Option<usize>> = vec![Some(1); n];
    let join = |parent: Option<usize>, child: Option<usize>| match (parent, child) {
        (Some(p), Some(c)) => Some(p.max(c + 1)),
        _ => None,
    };
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        mark[start] = Mark::Open;
        // Each open node, its successors and the next one to visit.
        let mut stack = vec![(start, next(start), 0)];
        while let Some((node, successors, at)) = stack.last_mut() {
            let node = *node;
            match successors.get(*at).copied() {
                Some(s) if s < n => {
                    *at += 1;
                    match mark[s] {
                        Mark::New => {
                            mark[s] = Mark::Open;
                            stack.push((s, next(s), 0));
                        }
                        // Back to a node on the current path: a cycle.
                        Mark::Open => len[node] = None,
                        Mark::Done => len[node] = join(len[node], len[s]),
                    }
                }
                Some(_) => *at += 1,
                None => {
                    mark[node] = Mark::Done;
                    stack.pop();
                    if let Some((parent, ..)) = stack.last() {
                        len[*parent] = join(len[*parent], len[node]);
                    }
                }
            }
        }
    }
    len
}

/// Compilation state for one flag or segment.
struct Cx<'p> {
    item: String,
    problems: &'p mut Vec<Problem>,
    segments: &'p HashMap<&'p str, usize>,
}

impl Cx<'_> {
    fn problem(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { item: self.item.clone(), field: field.into(), message: message.into() });
    }

    fn check_variation(&mut self, field: &str, v: i64, n: usize) {
        if v < 0 || v as usize >= n {
            self.problem(field, format!("variation {v} does not exist (the flag has {n})"));
        }
    }

    fn check_kind(&mut self, field: &str, kind: &str) {
        if !valid_kind(kind) {
            self.problem(field, format!("invalid context kind `{kind}`"));
        }
    }

    fn flag(&mut self, key: &str, f: &model::Flag, by_key: &HashMap<Box<str>, usize>) -> CFlag {
        let n = f.variations.len();
        if let Some(v) = f.off_variation {
            self.check_variation("offVariation", v, n);
        }
        let prerequisites = f
            .prerequisites
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let flag = by_key.get(p.key.as_str()).copied();
                if flag.is_none() {
                    self.problem(format!("prerequisites[{i}].key"), format!("no flag `{}`", p.key));
                }
                CPrereq { key: p.key.as_str().into(), flag, variation: p.variation }
            })
            .collect();
        let targets = self.targets(f);
        let rules = f
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let at = format!("rules[{i}]");
                let clauses = self.clauses(&at, &r.clauses);
                let outcome = self.outcome(&at, key, &f.salt, r.variation, r.rollout.as_ref(), n);
                CRule { id: r.id.as_str().into(), clauses, outcome }
            })
            .collect();
        let fallthrough =
            self.outcome("fallthrough", key, &f.salt, f.fallthrough.variation, f.fallthrough.rollout.as_ref(), n);
        CFlag {
            key: key.into(),
            on: f.on,
            prerequisites,
            targets,
            rules,
            fallthrough,
            off_variation: f.off_variation,
            variations: f.variations.clone(),
        }
    }

    /// Targets in LaunchDarkly's evaluation order: `contextTargets` when present (a
    /// `user` entry with no values stands for the `targets` entry of that variation),
    /// else `targets`.
    fn targets(&mut self, f: &model::Flag) -> Vec<CTarget> {
        let n = f.variations.len();
        let user = |t: &model::Target| CTarget {
            kind: "user".into(),
            values: t.values.iter().map(|v| v.as_str().into()).collect(),
            variation: t.variation,
        };
        for (i, t) in f.targets.iter().enumerate() {
            self.check_variation(&format!("targets[{i}].variation"), t.variation, n);
        }
        if f.context_targets.is_empty() {
            return f.targets.iter().map(user).collect();
        }
        let mut out = Vec::new();
        for (i, ct) in f.context_targets.iter().enumerate() {
            let kind = ct.context_kind.as_deref().unwrap_or("user");
            self.check_kind(&format!("contextTargets[{i}].contextKind"), kind);
            self.check_variation(&format!("contextTargets[{i}].variation"), ct.variation, n);
            if kind == "user" && ct.values.is_empty() {
                out.extend(f.targets.iter().filter(|t| t.variation == ct.variation).map(user));
            } else {
                out.push(CTarget {
                    kind: kind.into(),
                    values: ct.values.iter().map(|v| v.as_str().into()).collect(),
                    variation: ct.variation,
                });
            }
        }
        out
    }

    fn outcome(
        &mut self,
        at: &str,
        key: &str,
        salt: &str,
        variation: Option<i64>,
        rollout: Option<&Rollout>,
        n: usize,
    ) -> Outcome {
        match (variation, rollout) {
            (Some(v), _) => {
                self.check_variation(&format!("{at}.variation"), v, n);
                Outcome::Variation(v)
            }
            (None, Some(r)) if !r.variations.is_empty() => {
                for (i, wv) in r.variations.iter().enumerate() {
                    self.check_variation(&format!("{at}.rollout.variations[{i}].variation"), wv.variation, n);
                }
                let total: i64 = r.variations.iter().map(|w| w.weight).sum();
                if total != 100_000 {
                    self.problem(
                        format!("{at}.rollout.variations"),
                        format!("weights add up to {total}, not 100000 (100%)"),
                    );
                }
                let context_kind = r.context_kind.as_deref().unwrap_or("user");
                self.check_kind(&format!("{at}.rollout.contextKind"), context_kind);
                let bucket_by =
                    self.bucket_by(&format!("{at}.rollout.bucketBy"), r.bucket_by.as_deref(), r.context_kind.is_some());
                let prefix = match r.seed {
                    Some(seed) => seed.to_string(),
                    None => format!("{key}.{salt}"),
                };
                Outcome::Rollout(CRollout {
                    experiment: r.kind.as_deref() == Some("experiment"),
                    context_kind: context_kind.into(),
                    bucket_by,
                    prefix: prefix.into(),
                    variations: r.variations.clone(),
                })
            }
            (None, Some(_)) => {
                self.problem(format!("{at}.rollout.variations"), "a rollout needs at least one variation");
                Outcome::Malformed
            }
            (None, None) => {
                self.problem(at, "needs a `variation` or a `rollout`");
                Outcome::Malformed
            }
        }
    }

    /// `bucketBy`: a reference when the rollout names a context kind, else a literal
    /// attribute name; absent means the key.
    fn bucket_by(&mut self, at: &str, bucket_by: Option<&str>, with_kind: bool) -> Option<AttrRef> {
        let name = bucket_by.unwrap_or("key");
        let r = if with_kind { AttrRef::parse(name) } else { AttrRef::literal(name) };
        if r.is_none() {
            self.problem(at, format!("invalid attribute reference `{name}`"));
        }
        r
    }

    fn clauses(&mut self, at: &str, clauses: &[Clause]) -> Vec<CClause> {
        clauses.iter().enumerate().map(|(i, c)| self.clause(&format!("{at}.clauses[{i}]"), c)).collect()
    }

    fn clause(&mut self, at: &str, c: &Clause) -> CClause {
        let kind = c.context_kind.as_deref().unwrap_or("user");
        if c.context_kind.is_some() {
            self.check_kind(&format!("{at}.contextKind"), kind);
        }
        let op = self.op(at, &c.op, &c.values);
        let attr = if matches!(op, Op::SegmentMatch(_)) {
            // The attribute of a segmentMatch clause is ignored.
            AttrRef::literal("key")
        } else if c.context_kind.is_some() {
            AttrRef::parse(&c.attribute)
        } else {
            AttrRef::literal(&c.attribute)
        };
        if attr.is_none() {
            self.problem(format!("{at}.attribute"), format!("invalid attribute reference `{}`", c.attribute));
        }
        CClause { context_kind: kind.into(), attr, op, negate: c.negate }
    }

    fn op(&mut self, at: &str, op: &str, values: &[Value]) -> Op {
        let strings = || values.iter().filter_map(Value::as_str).map(Box::from).collect::<Vec<Box<str>>>();
        let numbers = || values.iter().filter_map(Value::as_f64).collect::<Vec<f64>>();
        match op {
            "in" => Op::In(value_set(values)),
            "startsWith" => Op::StartsWith(strings()),
            "endsWith" => Op::EndsWith(strings()),
            "contains" => Op::Contains(
                values.iter().filter_map(Value::as_str).map(|v| Finder::new(v.as_bytes()).into_owned()).collect(),
            ),
            "matches" => Op::Matches(
                values
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        let s = v.as_str()?;
                        Regex::new(s)
                            .map_err(|e| {
                                self.problem(
                                    format!("{at}.values[{i}]"),
                                    format!("invalid regular expression `{s}`: {}", regex_message(&e)),
                                )
                            })
                            .ok()
                    })
                    .collect(),
            ),
            "lessThan" => Op::LessThan(numbers()),
            "lessThanOrEqual" => Op::LessThanOrEqual(numbers()),
            "greaterThan" => Op::GreaterThan(numbers()),
            "greaterThanOrEqual" => Op::GreaterThanOrEqual(numbers()),
            "before" | "after" => {
                let dates = values
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        let d = date_millis(v);
                        if d.is_none() {
                            self.problem(
                                format!("{at}.values[{i}]"),
                                "not a date (RFC 3339 text or epoch milliseconds)",
                            );
                        }
                        d
                    })
                    .collect();
                if op == "before" {
                    Op::Before(dates)
                } else {
                    Op::After(dates)
                }
            }
            "semVerEqual" | "semVerLessThan" | "semVerGreaterThan" => {
                let versions = values
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        let parsed = v.as_str().and_then(SemVer::parse).map(SemVer::to_owned);
                        if parsed.is_none() {
                            self.problem(format!("{at}.values[{i}]"), "not a semantic version");
                        }
                        parsed
                    })
                    .collect();
                match op {
                    "semVerEqual" => Op::SemVerEqual(versions),
                    "semVerLessThan" => Op::SemVerLessThan(versions),
                    _ => Op::SemVerGreaterThan(versions),
                }
            }
            "segmentMatch" => Op::SegmentMatch(
                values
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        let key = v.as_str()?;
                        let idx = self.segments.get(key).copied();
                        if idx.is_none() {
                            self.problem(format!("{at}.values[{i}]"), format!("no segment `{key}`"));
                        }
                        idx
                    })
                    .collect(),
            ),
            other => {
                self.problem(format!("{at}.op"), format!("unknown operator `{other}` (it never matches)"));
                Op::Unknown
            }
        }
    }

    fn segment(&mut self, key: &str, s: &model::Segment) -> CSegment {
        let set = |v: &[String]| v.iter().map(|s| s.as_str().into()).collect::<KeySet>();
        let contexts = |cx: &mut Self, name: &str, targets: &[model::SegmentTarget]| {
            targets
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    cx.check_kind(&format!("{name}[{i}].contextKind"), &t.context_kind);
                    (t.context_kind.as_str().into(), set(&t.values))
                })
                .collect::<Vec<_>>()
        };
        if s.unbounded {
            self.problem("unbounded", "big segments are not supported: this segment matches only by its rules");
        }
        let included_contexts = contexts(self, "includedContexts", &s.included_contexts);
        let excluded_contexts = contexts(self, "excludedContexts", &s.excluded_contexts);
        let rules = s
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let at = format!("rules[{i}]");
                let clauses = self.clauses(&at, &r.clauses);
                let context_kind = r.rollout_context_kind.as_deref().unwrap_or("user");
                let bucket_by = if r.weight.is_some() {
                    self.bucket_by(&format!("{at}.bucketBy"), r.bucket_by.as_deref(), r.rollout_context_kind.is_some())
                } else {
                    None
                };
                CSegmentRule {
                    clauses,
                    weight: r.weight.map(|w| w as f32 / 100_000.0),
                    bucket_by,
                    context_kind: context_kind.into(),
                }
            })
            .collect();
        CSegment {
            key: key.into(),
            included: set(&s.included),
            excluded: set(&s.excluded),
            included_contexts,
            excluded_contexts,
            rules,
            prefix: format!("{key}.{}", s.salt).into(),
        }
    }
}

/// The one-line reason of a regex error (its `Display` spans several lines).
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or_default();
    last.strip_prefix("error: ").unwrap_or(last).to_string()
}

fn value_set(values: &[Value]) -> ValueSet {
    let mut set = ValueSet::default();
    for v in values {
        match v {
            Value::String(s) => {
                set.strings.insert(s.as_str().into());
            }
            Value::Number(n) => set.numbers.extend(n.as_f64()),
            Value::Bool(b) => set.bools[usize::from(*b)] = true,
            Value::Null => {}
            other => set.others.push(other.clone()),
        }
    }
    set
}

/// A date as epoch milliseconds: a number, or RFC 3339 text with a time and a zone.
pub(super) fn date_millis(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
            // RFC 3339 proper: the date and time are separated by `T`.
            if s.as_bytes().get(10).is_some_and(|b| *b != b'T' && *b != b't') {
                return None;
            }
            Some(t.timestamp_millis() as f64 + f64::from(t.timestamp_subsec_nanos() % 1_000_000) / 1e6)
        }
        _ => None,
    }
}
