//! The architecture, checked: which top-level module of `src/` may use
//! which (no module uses one above it, so there is no import cycle), no
//! role check outside the core, and no source file too long to read.
//!
//! Read from the source text, not the compiler: every `crate::name` (and
//! `crate::{a, b}`) in a module's files counts, except in `#[cfg(test)]`
//! items — a test may use test support from anywhere (`fuzzing`'s
//! strategies in the dialects' property tests).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use modules of lower layers
/// only; one of the same layer or above is an error. Every top-level
/// module must be placed here.
const LAYERS: &[&[&str]] = &[
    // Leaves: the one error type; ids, users, rooms, messages, times.
    &["error"],
    &["model"],
    // The only code that imports sled.
    &["store"],
    // Every rule: the sequencer, the hub, the operations.
    &["core"],
    // Transport; the webhook sender; systemd; the load generator.
    &["net", "webhooks", "systemd", "bench"],
    // Wire protocols (over net and core); the built-in web client.
    &["dialects", "web"],
    // The route table; the operator's control socket; fuzz entry points.
    &["app", "control", "fuzzing"],
    &["config"],
    &["daemon"],
    &["cli"],
];

/// Longest source file, in lines (tests included).
const MAX_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`None` for lib.rs, main.rs).
fn top_module(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.as_str() {
        "lib.rs" | "main.rs" => None,
        _ => Some(first.trim_end_matches(".rs").to_owned()),
    }
}

/// The text without `#[cfg(test)]` items and without `//` comments.
fn production_code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "#[cfg(test)]" {
            let line = lines[i].split("//").next().unwrap_or("");
            out.push_str(line);
            out.push('\n');
            i += 1;
            continue;
        }
        // Skip the item: to its `;`, or to the brace closing its body.
        let mut j = i + 1;
        while j < lines.len() && lines[j].trim().starts_with("#[") {
            j += 1;
        }
        if j < lines.len() && lines[j].trim_end().ends_with(';') {
            i = j + 1;
            continue;
        }
        let (mut depth, mut opened) = (0i64, false);
        while j < lines.len() {
            let line = lines[j].split("//").next().unwrap_or("");
            depth += line.matches('{').count() as i64 - line.matches('}').count() as i64;
            opened |= line.contains('{');
            j += 1;
            if opened && depth <= 0 {
                break;
            }
        }
        i = j;
    }
    out
}

/// The top-level modules `code` names through `crate::`.
fn uses(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                let name = ident(part.trim());
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// Module → (used module → the files that use it).
fn graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut g: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let Some(top) = top_module(&file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let rel = file.strip_prefix(src()).unwrap().display().to_string();
        let entry = g.entry(top.clone()).or_default();
        for used in uses(&production_code(&text)) {
            if used != top {
                entry.entry(used).or_default().insert(rel.clone());
            }
        }
    }
    g
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn no_module_uses_one_of_its_own_layer_or_above() {
    let mut wrong = Vec::new();
    for (module, used) in graph() {
        let Some(mine) = layer_of(&module) else {
            wrong.push(format!("src/{module} is in no layer of tests/layers.rs"));
            continue;
        };
        for (other, files) in used {
            match layer_of(&other) {
                Some(theirs) if theirs < mine => {}
                Some(_) => wrong.push(format!(
                    "{module} uses {other}, which is not below it (in {files:?})"
                )),
                None => wrong.push(format!("{module} uses {other}, in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The layers allow more than the architecture does in one place: the
/// wire side (routes, dialects, transport, the web client) reaches the
/// store only through the core (STYLE.md: "a dialect never touches the
/// store").
#[test]
fn nothing_on_the_wire_side_uses_the_store() {
    let g = graph();
    let wrong: Vec<String> = ["app", "dialects", "net", "web"]
        .iter()
        .filter_map(|m| {
            let files = g.get(*m)?.get("store")?;
            Some(format!("{m} uses store (in {files:?})"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Only what the binary, `fuzz/` and the store-opening tests need is
/// public; every other module is `pub(crate)`.
#[test]
fn only_what_main_and_fuzz_need_is_public() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let public: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    let want: BTreeSet<&str> = ["bench", "cli", "config", "daemon", "fuzzing", "store"].into();
    assert_eq!(public, want);
}

#[test]
fn no_role_is_checked_outside_the_core() {
    let mut files = Vec::new();
    for dir in ["app", "dialects", "net"] {
        rust_files(&src().join(dir), &mut files);
    }
    let found: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).unwrap().contains("Role::Admin"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        found.is_empty(),
        "admin checks belong in core::actor: {found:?}"
    );
}

#[test]
fn no_source_file_is_longer_than_the_limit() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

/// The checker itself: a use in a test item does not count, one in code
/// does, and grouped uses are read.
#[test]
fn the_reader_skips_test_items_and_reads_grouped_uses() {
    let code = "use crate::{core::Core, model};\nfn f() { crate::store::x(); }\n\
                #[cfg(test)]\nmod tests {\n    use crate::fuzzing;\n    fn g() { if true { } }\n}\n\
                #[cfg(test)]\nuse crate::bench;\n// crate::cli in a comment\n";
    let found = uses(&production_code(code));
    let want: BTreeSet<String> = ["core", "model", "store"].map(String::from).into();
    assert_eq!(found, want);
}
