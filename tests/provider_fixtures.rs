//! Provider translation against recorded-style fixtures (`tests/fixtures/`):
//!
//! - `anthropic/stream/NAME.sse` → `NAME.expected.sse`, with the [`Reply`] in `NAME.json`;
//! - `azure/stream/NAME.sse` and `openai/stream/NAME.sse` → `NAME.expected.sse`;
//! - every stream fed whole, byte by byte, and cut at random offsets gives the same bytes;
//! - golden pairs: `anthropic/requests/NAME.json` (`openai` → `anthropic`, or `invalid`),
//!   `anthropic/responses/NAME.json` (`anthropic` + `reply` → `openai`),
//!   `azure/json/NAME.json` and `azure/errors/NAME.json`.
//!
//! `SLUICE_BLESS=1 cargo test --test provider_fixtures` rewrites the `.expected.sse` files
//! from the current output (review the diff before keeping it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::Value;
use sluice::providers::anthropic::request::{self, Defaults, Reply, Translated};
use sluice::providers::anthropic::{response, stream};
use sluice::providers::{azure, openai};

/// The Unix time every translated answer is stamped with.
const CREATED: u64 = 1_700_000_000;

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(sub)
}

/// The files of `sub` whose names end with `suffix` (not `.expected.sse`), sorted.
fn files(sub: &str, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(suffix) && !name.ends_with(".expected.sse")
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no {suffix} fixtures in {sub}");
    out
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn reply(v: &Value) -> Reply {
    Reply {
        include_usage: v["include_usage"].as_bool().unwrap(),
        json_tool: v["json_tool"].as_str().map(str::to_string),
    }
}

/// Which stream translation a fixture is for.
#[derive(Debug, Clone)]
enum Kind {
    Anthropic(Reply),
    Azure,
    OpenAi,
}

/// A stream fixture: its input and what it must become.
#[derive(Debug, Clone)]
struct StreamFixture {
    path: PathBuf,
    kind: Kind,
    input: Vec<u8>,
}

impl StreamFixture {
    fn expected_path(&self) -> PathBuf {
        self.path.with_extension("expected.sse")
    }

    /// Feed `pieces` in order, then end the stream.
    fn run(&self, pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.kind {
            Kind::Anthropic(reply) => {
                let mut t = stream::Translator::new(reply, CREATED);
                for p in pieces {
                    out.extend(t.feed(p));
                }
                out.extend(t.finish());
                assert!(t.finished());
            }
            Kind::Azure => {
                let mut n = azure::StreamNormaliser::new();
                for p in pieces {
                    out.extend(n.feed(p));
                }
                out.extend(n.finish());
            }
            Kind::OpenAi => {
                let mut f = openai::ToolIndexFiller::new();
                for p in pieces {
                    out.extend(f.feed(p));
                }
                out.extend(f.finish());
            }
        }
        out
    }
}

fn stream_fixtures() -> Vec<StreamFixture> {
    let mut out = Vec::new();
    for path in files("anthropic/stream", ".sse") {
        let kind = Kind::Anthropic(reply(&json(&path.with_extension("json"))));
        out.push(StreamFixture { input: std::fs::read(&path).unwrap(), path, kind });
    }
    for (sub, kind) in [("azure/stream", Kind::Azure), ("openai/stream", Kind::OpenAi)] {
        for path in files(sub, ".sse") {
            out.push(StreamFixture { input: std::fs::read(&path).unwrap(), path, kind: kind.clone() });
        }
    }
    out
}

#[test]
fn each_stream_fixture_becomes_its_expected_output() {
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    let mut failed = Vec::new();
    for f in stream_fixtures() {
        let got = f.run(&[&f.input]);
        let expected_path = f.expected_path();
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read(&expected_path).unwrap_or_default();
        if got != expected {
            failed.push(format!(
                "{}:\n--- got\n{}\n--- expected\n{}",
                f.path.display(),
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&expected)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn stream_fixtures_split_into_single_bytes_give_the_same_output() {
    for f in stream_fixtures() {
        // Non-ASCII text, so that splits fall inside UTF-8 sequences.
        assert!(std::str::from_utf8(&f.input).unwrap().chars().any(|c| c.len_utf8() > 1), "{}", f.path.display());
        let bytes: Vec<&[u8]> = f.input.chunks(1).collect();
        assert_eq!(
            String::from_utf8_lossy(&f.run(&bytes)),
            String::from_utf8_lossy(&f.run(&[&f.input])),
            "{}",
            f.path.display()
        );
    }
}

/// `input` cut at `cuts` (any order, repeats allowed, taken modulo its length + 1).
fn cut<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    at.sort_unstable();
    let mut pieces = Vec::new();
    let mut from = 0;
    for c in at {
        pieces.push(&input[from..c]);
        from = c;
    }
    pieces.push(&input[from..]);
    pieces
}

proptest! {
    /// Bytes may split anywhere (mid-line, mid-UTF-8, empty pieces): the output is the same.
    #[test]
    fn stream_fixtures_cut_anywhere_give_the_same_output(cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
        for f in stream_fixtures() {
            let whole = f.run(&[&f.input]);
            let got = f.run(&cut(&f.input, &cuts));
            prop_assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&whole),
                "{}",
                f.path.display()
            );
        }
    }
}

#[test]
fn request_golden_pairs() {
    for path in files("anthropic/requests", ".json") {
        let fixture = json(&path);
        let defaults = Defaults { max_tokens: fixture["defaults"]["max_tokens"].as_u64() };
        let result = request::translate(&fixture["openai"], defaults);
        let name = path.display();
        if let Some(invalid) = fixture.get("invalid") {
            let err = result.expect_err(&name.to_string());
            assert_eq!(err.param, invalid["param"].as_str().unwrap(), "{name}: {err}");
            continue;
        }
        let Translated { body, reply: got_reply } = result.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(body, fixture["anthropic"], "{name}:\n{body:#}");
        if let Some(expected) = fixture.get("reply") {
            assert_eq!(got_reply, reply(expected), "{name}");
        }
        // The app's user id is only ever sent hashed.
        if let Some(user) = fixture["openai"]["user"].as_str() {
            assert!(!body.to_string().contains(user), "{name}");
        }
    }
}

#[test]
fn response_golden_pairs() {
    for path in files("anthropic/responses", ".json") {
        let fixture = json(&path);
        let got = response::translate(&fixture["anthropic"], &reply(&fixture["reply"]), CREATED);
        assert_eq!(got, fixture["openai"], "{}:\n{got:#}", path.display());
    }
}

#[test]
fn azure_json_golden_pairs() {
    for path in files("azure/json", ".json") {
        let fixture = json(&path);
        let body = serde_json::to_vec(&fixture["azure"]).unwrap();
        let got: Option<Value> = azure::normalise_json(&body).map(|b| serde_json::from_slice(&b).unwrap());
        assert_eq!(got.unwrap_or(Value::Null), fixture["openai"], "{}", path.display());
    }
}

#[test]
fn azure_error_golden_pairs() {
    for path in files("azure/errors", ".json") {
        let fixture = json(&path);
        let status = u16::try_from(fixture["status"].as_u64().unwrap()).unwrap();
        let body = serde_json::to_vec(&fixture["azure"]).unwrap();
        let got = azure::translate_error(status, &body)
            .map(|(status, body)| serde_json::json!({"status": status, "body": body}))
            .unwrap_or(Value::Null);
        assert_eq!(got, fixture["openai"], "{}", path.display());
    }
}
