//! The official Mustache spec's fixtures for the subset sluice supports (interpolation,
//! sections, inverted sections, comments, standalone lines), rendered with sluice's
//! template engine; and the cases where Mustache implementations differ, rendered as
//! LaunchDarkly's AI SDKs render them. The fixtures and their provenance are in
//! `tests/data/mustache-spec/`; the README's "Template semantics" tells the choices.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde_json::Value;
use sluice::aiconfig::template::{Budget, Scope, Template};

/// The spec files vendored: every fixture of each is rendered.
const SPEC_FILES: [&str; 4] = ["comments", "interpolation", "inverted", "sections"];

/// The spec's files that are not vendored, and why.
const UNSUPPORTED_FILES: [(&str, &str); 5] = [
    ("partials", "`{{> name}}` is refused when a template compiles"),
    ("delimiters", "`{{=<% %>=}}` is refused when a template compiles"),
    ("~lambdas", "values come as JSON: there are no functions"),
    ("~dynamic-names", "optional module; `{{>*name}}` is a partial"),
    ("~inheritance", "optional module; `{{<parent}}` / `{{$block}}` are not supported"),
];

/// Fixtures not run, all for one reason: their data, the root scope, is a string, a
/// number or a list, named `{{.}}`; sluice's root is always the object of `ldctx`, `vars`
/// and `client`, never named.
const SKIPPED: [(&str, &str); 6] = [
    ("interpolation", "Implicit Iterators - Basic Interpolation"),
    ("interpolation", "Implicit Iterators - HTML Escaping"),
    ("interpolation", "Implicit Iterators - Triple Mustache"),
    ("interpolation", "Implicit Iterators - Ampersand"),
    ("interpolation", "Implicit Iterators - Basic Integer Interpolation"),
    ("sections", "Implicit Iterator - Root-level"),
];

const NO_ESCAPING: &str = "nothing is HTML-escaped, as in LaunchDarkly's Node AI SDK (mustache.js with \
                           `escape: (item) => item`): a prompt is not HTML";

/// Fixtures sluice renders differently from the spec on purpose: (file, name, what
/// sluice renders, why).
const DEVIATIONS: [(&str, &str, &str, &str); 3] = [
    ("interpolation", "HTML Escaping", "These characters should be HTML escaped: & \" < >\n", NO_ESCAPING),
    ("sections", "Implicit Iterator - HTML Escaping", "\"(&)(\")(<)(>)\"", NO_ESCAPING),
    (
        "interpolation",
        "Dotted Names - Context Precedence",
        "ERROR",
        "a dotted name resolves from the innermost scope where all of it resolves, as both mustache.js \
         4.2.0 and chevron 0.14.0 do; the spec stops at the first scope holding its first part",
    ),
];

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mustache-spec")
}

fn load(file: &str) -> Vec<Value> {
    let path = data_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    doc["tests"].as_array().unwrap_or_else(|| panic!("{}: no tests", path.display())).clone()
}

/// The fixture's data is the root scope.
struct Root<'a>(&'a Value);

impl Scope for Root<'_> {
    fn lookup(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }
}

/// Compile and render one case, or say why it could not be.
fn render(case: &Value) -> Result<String, String> {
    let template = case["template"].as_str().ok_or("no template")?;
    let t = Template::compile(template).map_err(|e| format!("does not compile: {e}"))?;
    let mut out = String::new();
    t.render(&Root(&case["data"]), &mut out, &mut Budget::new(1 << 20)).map_err(|e| format!("does not render: {e}"))?;
    Ok(out)
}

fn name(case: &Value) -> &str {
    case["name"].as_str().unwrap_or("?")
}

#[test]
fn the_spec_fixtures_render_as_the_spec_says() {
    let (mut passed, mut deviated, mut skipped) = (0, 0, 0);
    let mut failures = Vec::new();
    let mut seen: Vec<(&str, String)> = Vec::new();
    for file in SPEC_FILES {
        for case in load(&format!("{file}.json")) {
            let name = name(&case).to_string();
            let got = render(&case);
            seen.push((file, name.clone()));
            if SKIPPED.contains(&(file, name.as_str())) {
                // A skip that starts passing is stale: take it off the list.
                if got.as_deref().ok() == case["expected"].as_str() {
                    failures.push(format!("{file}: `{name}` is skipped but passes"));
                }
                skipped += 1;
                continue;
            }
            let deviation = DEVIATIONS.iter().find(|(f, n, ..)| *f == file && *n == name);
            let expected = match deviation {
                Some((_, _, ours, why)) => {
                    assert_ne!(case["expected"].as_str(), Some(*ours), "{file}: `{name}` is no deviation ({why})");
                    deviated += 1;
                    *ours
                }
                None => case["expected"].as_str().unwrap_or_default(),
            };
            match got {
                Ok(out) if out == expected => passed += usize::from(deviation.is_none()),
                Ok(out) => failures.push(format!(
                    "{file}: `{name}`\n  template: {:?}\n  data:     {}\n  expected: {expected:?}\n  got:      {out:?}",
                    case["template"].as_str().unwrap_or_default(),
                    case["data"]
                )),
                Err(e) => failures.push(format!("{file}: `{name}` {e}")),
            }
        }
    }
    // Every listed fixture exists, so the lists cannot go stale silently.
    let listed = SKIPPED.iter().copied().chain(DEVIATIONS.iter().map(|(f, n, ..)| (*f, *n)));
    for (i, (file, name)) in listed.clone().enumerate() {
        assert!(seen.iter().any(|(f, n)| *f == file && n == name), "{file}: no fixture `{name}`");
        assert!(!listed.clone().skip(i + 1).any(|l| l == (file, name)), "{file}: `{name}` is listed twice");
    }
    assert!(failures.is_empty(), "{} spec fixtures fail:\n{}", failures.len(), failures.join("\n"));
    // The counts change only when the fixtures or the lists above do.
    assert_eq!((passed, deviated, skipped), (101, 3, 6), "spec fixtures: passed, deviating on purpose, skipped");
}

#[test]
fn only_the_supported_spec_files_are_vendored() {
    let mut files: Vec<String> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".json"))
        .collect();
    files.sort();
    let mut want: Vec<String> = SPEC_FILES.iter().map(|f| format!("{f}.json")).collect();
    want.push("launchdarkly-sdks.json".into());
    want.sort();
    assert_eq!(files, want);
    for (file, why) in UNSUPPORTED_FILES {
        assert!(!files.contains(&format!("{file}.json")), "{file}: {why}");
    }
}

#[test]
fn templates_render_as_launchdarklys_ai_sdks_render_them() {
    let cases = load("launchdarkly-sdks.json");
    assert!(cases.len() >= 30, "{}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = name(case);
        let expected = case["expected"].as_str().unwrap_or_default();
        // Where sluice renders otherwise than either SDK's library, the case says why.
        let libraries = [case["chevron"].as_str(), case["mustache_js"].as_str()];
        assert!(libraries.iter().all(Option::is_some), "`{name}`: record the libraries' output (record.py, record.js)");
        if libraries.iter().any(|l| *l != Some(expected)) {
            assert!(
                case["why"].is_string(),
                "`{name}`: sluice differs from {libraries:?} and the case does not say why"
            );
        }
        match render(case) {
            Ok(out) if out == expected => {}
            Ok(out) => failures.push(format!("`{name}`: expected {expected:?}, got {out:?}")),
            Err(e) => failures.push(format!("`{name}` {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
