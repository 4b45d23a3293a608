//! The layers flow one way: every top-level module of the gateway crate uses only the
//! modules below it in [`FLOORS`] (ARCHITECTURE.md holds the same list). This reads every
//! `crate::…` reference of non-test code under `src/` and fails naming each edge that
//! reaches up (which is also how a cycle shows: one of its edges points up).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules, ground floor first.
const FLOORS: &[&str] = &[
    "wire",
    "worker",
    "keys",
    "token",
    "stats",
    "flags",
    "config",
    "auth",
    "metrics",
    "providers",
    "quality",
    "aiconfig",
    "snapshot",
    "gateway",
    "proxy",
    "state",
    "fleet",
    "guard",
    "experiment",
    "admin",
    "server",
    "cli",
];

/// Every top-level module `src/` has (a `name.rs` or a `name/` directory).
fn modules() -> BTreeSet<String> {
    std::fs::read_dir("src")
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let module = name.strip_suffix(".rs").unwrap_or(&name).to_string();
            (!["lib", "main"].contains(&module.as_str())).then_some(module)
        })
        .collect()
}

/// The code of `text` without its tests: a `#[cfg(test)]` line and the item after it (a
/// `mod x;` declaration, or a test module's block, which runs to the end of the file:
/// test modules come last). Any other item under `#[cfg(test)]` is left in, so nothing
/// hides from the check by standing after one.
fn non_test(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim_start() != "#[cfg(test)]" {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        match lines.next() {
            Some(next) if next.trim_start().starts_with("mod ") && next.trim_end().ends_with(';') => {}
            Some(next) if next.trim_start().starts_with("mod ") => break,
            Some(next) => {
                out.push_str(next);
                out.push('\n');
            }
            None => break,
        }
    }
    out
}

/// The crate modules `code` names: `crate::name` and `crate::{name, …}`.
fn referenced(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect::<String>();
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(|p| ident(p.trim())).filter(|p| !p.is_empty()));
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

/// Which modules each top-level module uses, from its non-test code.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if path.is_dir() {
                // Test-only directories (`tests/`, `kind_tests/`).
                if name != "tests" && !name.ends_with("_tests") {
                    walk(&path, files);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(Path::new("src"), &mut files);
    for file in files {
        let relative = file.strip_prefix("src").unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_str().unwrap();
        let module = first.strip_suffix(".rs").unwrap_or(first);
        if !modules.contains(module) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for used in referenced(&non_test(&text)) {
            if used != module && modules.contains(&used) {
                edges.entry(module.to_string()).or_default().insert(used);
            }
        }
    }
    edges
}

#[test]
fn every_module_uses_only_the_floors_below_it() {
    let modules = modules();
    let listed: BTreeSet<String> = FLOORS.iter().map(|s| s.to_string()).collect();
    assert_eq!(modules, listed, "FLOORS lists every top-level module of src/, and only those");
    let floor = |m: &str| FLOORS.iter().position(|f| *f == m).unwrap();
    let mut up = Vec::new();
    for (module, uses) in edges() {
        for used in uses {
            if floor(&used) > floor(&module) {
                up.push(format!("{module} → {used}"));
            }
        }
    }
    assert!(up.is_empty(), "these modules reach above their floor (see ARCHITECTURE.md, Layers): {up:?}");
}

#[test]
fn architecture_md_lists_the_same_floors() {
    let text = std::fs::read_to_string("ARCHITECTURE.md").unwrap();
    let line = text.lines().find(|l| l.starts_with("Floors, ground first:")).expect("the floors line");
    let listed: Vec<&str> = line["Floors, ground first:".len()..]
        .split('→')
        .map(|s| s.trim().trim_end_matches('.').trim_matches('`'))
        .collect();
    assert_eq!(listed, FLOORS, "ARCHITECTURE.md's floors line and FLOORS agree");
}

#[test]
fn the_reference_reader_sees_both_forms() {
    let code =
        "use crate::config::Config;\nuse crate::{body, metrics::Outcome};\nlet x = crate::wire::JsonBody::parse(b);";
    let found: Vec<String> = referenced(code).into_iter().collect();
    assert_eq!(found, ["body", "config", "metrics", "wire"]);
    assert_eq!(non_test("a\n#[cfg(test)]\nmod tests { crate::cli }"), "a\n");
    // A test-only declaration or import does not hide what follows it.
    assert_eq!(non_test("#[cfg(test)]\nmod t;\nuse crate::cli;\n"), "use crate::cli;\n");
    assert_eq!(non_test("#[cfg(test)]\nuse crate::x;\nuse crate::cli;\n"), "use crate::x;\nuse crate::cli;\n");
}
