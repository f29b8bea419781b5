//! The one-way arrows of the architecture, checked (see ARCHITECTURE.md).
//!
//! Every module may use the modules of lower layers and its own top-level module, never a
//! module of its own layer or above. A connector's `config` module belongs to the bottom
//! layer wherever it lives, because the root config composes it:
//!
//! ```text
//! 0 foundation   error, config (and every `*::config`), load, schema, sql, storage, tls, values, failpoints
//! 1 measures     reconcile, sim
//! 2 movers       sources, stage
//! 3 memory       state
//! 4 merging      destinations
//! 5 running      pipeline, transform, status
//! 6 streaming    stream
//! 7 commands     cli, demo, init, orchestrate, ui
//! ```
//!
//! The check reads the source text: every `crate::` path outside comments and test modules.

#![cfg(test)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const LAYERS: &[&[&str]] = &[
    &[
        "error",
        "config",
        "load",
        "schema",
        "sql",
        "storage",
        "tls",
        "values",
        "failpoints",
        "Error",
        "Result",
    ],
    &["reconcile", "sim"],
    &["sources", "stage"],
    &["state"],
    &["destinations"],
    &["pipeline", "transform", "status"],
    &["stream"],
    &["cli", "demo", "init", "orchestrate", "ui"],
];

/// The layer of a module path such as `["sources", "hubspot", "config"]`.
fn layer(path: &[String]) -> Option<usize> {
    if path.iter().any(|segment| segment == "config") {
        return Some(0);
    }
    let top = path.first()?;
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top.as_str()))
}

/// The module path of a file under `src/`: `src/sources/hubspot/client.rs` is
/// `["sources", "hubspot", "client"]`, a `mod.rs` names its folder.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its test modules (tests may reach
/// anywhere to build fixtures).
fn production_code(text: &str) -> String {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    code.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path the code names after `crate::`, expanding `use crate::{a, b::c}`.
fn referenced_paths(code: &str) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                found.insert(path_of(item));
            }
        } else {
            found.insert(path_of(after));
        }
        rest = after;
    }
    found.retain(|path| !path.is_empty());
    found
}

fn path_of(text: &str) -> Vec<String> {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    text[..end]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The imports that break the arrows, as `importer -> imported` lines.
fn upward_imports(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut broken = Vec::new();
    for file in files {
        let importer = module_path(src, &file);
        let Some(from) = layer(&importer) else {
            continue; // lib.rs, main.rs and this file
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        for target in referenced_paths(&production_code(&text)) {
            let Some(to) = layer(&target) else {
                broken.push(format!(
                    "{} -> crate::{}: module in no layer (add it to LAYERS)",
                    importer.join("::"),
                    target.join("::")
                ));
                continue;
            };
            let same_module = importer[0] == target[0];
            if same_module || to < from || (to == 0 && from == 0) {
                continue;
            }
            broken.push(format!(
                "{} (layer {from}) -> crate::{} (layer {to})",
                importer.join("::"),
                target.join("::")
            ));
        }
    }
    broken
}

#[test]
fn no_module_imports_upward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let broken = upward_imports(&src);
    assert!(
        broken.is_empty(),
        "imports against the layer order (see src/layers.rs):\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_check_sees_grouped_and_nested_imports() {
    let code = "use crate::{load::DeadLetter, stage::{Stage, columns_of}};\n\
                // use crate::pipeline::x;\nlet x = crate::sources::build(&c);";
    let paths = referenced_paths(&production_code(code));
    let tops: Vec<&str> = paths.iter().map(|p| p[0].as_str()).collect();
    assert_eq!(tops, ["load", "sources", "stage"]);
    assert_eq!(
        layer(&["sources".into(), "hubspot".into(), "config".into()]),
        Some(0)
    );
    assert_eq!(layer(&["sources".into(), "hubspot".into()]), Some(2));
}
