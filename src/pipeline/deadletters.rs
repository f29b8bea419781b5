//! `syncline deadletters`: the records a source sent that no destination could take, read
//! back from the stage and grouped by what was wrong with them, so a person sees "412 ×
//! `amount`: not a number" rather than 412 lines; or every record exported as CSV or JSONL
//! to fix and load again.
//!
//! Dead letters are the source's own data (the raw record is the point), so they are shown
//! as they are; nothing of the config (secrets) is ever part of them.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use crate::Result;
use crate::config::Config;
use crate::stage::{Stage, read_dead_letters_at};

/// One dead letter with where it was found.
#[derive(Debug, Clone, Serialize)]
pub struct Letter {
    pub stream: String,
    pub load_id: String,
    pub key: String,
    pub field: Option<String>,
    pub reason: String,
    pub raw: String,
}

/// Dead letters sharing a field and a reason (once the reason's `path:line:` is set apart).
#[derive(Debug)]
pub struct Group {
    pub stream: String,
    pub field: Option<String>,
    pub reason: String,
    pub count: u64,
    pub loads: std::collections::BTreeSet<String>,
    pub examples: Vec<Letter>,
}

/// What to read: every configured stream or one, every load or one.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    pub stream: Option<String>,
    pub load_id: Option<String>,
}

/// Every dead letter of the selected streams and loads, oldest load first.
pub async fn read(config: &Config, selection: &Selection) -> Result<Vec<Letter>> {
    let streams = super::loads::selected(config, selection.stream.as_deref())?;
    let stage = Stage::open(&config.staging)?;
    let mut letters = Vec::new();
    for stream in &streams {
        for load in stage.list_loads(&config.pipeline.name, stream).await? {
            if selection
                .load_id
                .as_ref()
                .is_some_and(|wanted| *wanted != load.load_id)
            {
                continue;
            }
            for path in load.dead_letter_files() {
                for letter in read_dead_letters_at(&stage, path).await? {
                    letters.push(Letter {
                        stream: stream.clone(),
                        load_id: load.load_id.clone(),
                        key: letter.key,
                        field: letter.field,
                        reason: letter.reason,
                        raw: letter.raw,
                    });
                }
            }
        }
    }
    Ok(letters)
}

/// The reason without the position the file source puts first (`exports/a.csv:17: `), which
/// differs for every record and would make each its own group.
fn kind_of(reason: &str) -> &str {
    let mut parts = reason.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(path), Some(line), Some(rest))
            if !path.is_empty()
                && !line.is_empty()
                && line.chars().all(|c| c.is_ascii_digit())
                && rest.starts_with(' ') =>
        {
            rest.trim_start()
        }
        _ => reason,
    }
}

/// Groups letters by stream, field and kind of reason, largest group first, keeping the
/// first `examples` letters of each.
pub fn group(letters: &[Letter], examples: usize) -> Vec<Group> {
    let mut groups: BTreeMap<(String, Option<String>, String), Group> = BTreeMap::new();
    for letter in letters {
        let reason = kind_of(&letter.reason).to_string();
        let group = groups
            .entry((letter.stream.clone(), letter.field.clone(), reason.clone()))
            .or_insert_with(|| Group {
                stream: letter.stream.clone(),
                field: letter.field.clone(),
                reason,
                count: 0,
                loads: Default::default(),
                examples: Vec::new(),
            });
        group.count += 1;
        group.loads.insert(letter.load_id.clone());
        if group.examples.len() < examples {
            group.examples.push(letter.clone());
        }
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by(|a, b| (&a.stream, b.count).cmp(&(&b.stream, a.count)));
    groups
}

/// A raw record cut for a terminal line (the export keeps it whole).
fn shorten(raw: &str, chars: usize) -> String {
    let one_line = raw.replace(['\n', '\r'], " ");
    if one_line.chars().count() > chars {
        format!("{}…", one_line.chars().take(chars).collect::<String>())
    } else {
        one_line
    }
}

/// The groups for a terminal: a heading per stream, a line per group, its examples indented.
pub fn render(groups: &[Group]) -> String {
    if groups.is_empty() {
        return "no dead letters\n".to_string();
    }
    let mut out = String::new();
    let mut stream: Option<&str> = None;
    for group in groups {
        if stream != Some(group.stream.as_str()) {
            let total: u64 = groups
                .iter()
                .filter(|g| g.stream == group.stream)
                .map(|g| g.count)
                .sum();
            out.push_str(&format!("{}: {total} dead letters\n", group.stream));
            stream = Some(&group.stream);
        }
        let field = group
            .field
            .as_deref()
            .map_or(String::new(), |f| format!("{f}: "));
        let loads = match group.loads.len() {
            1 => "1 load".to_string(),
            n => format!("{n} loads"),
        };
        out.push_str(&format!(
            "  {:>6} × {field}{} ({loads})\n",
            group.count, group.reason
        ));
        for example in &group.examples {
            out.push_str(&format!(
                "           key {:?} in load {}: {}\n",
                example.key,
                example.load_id,
                shorten(&example.raw, 120)
            ));
        }
    }
    out
}

/// Export formats: one record per line, every field whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    Csv,
    Jsonl,
}

/// Writes every letter to `out` as CSV (with a header) or JSON lines.
pub fn export(letters: &[Letter], format: Export, out: impl Write) -> std::io::Result<()> {
    match format {
        Export::Jsonl => {
            let mut out = std::io::BufWriter::new(out);
            for letter in letters {
                serde_json::to_writer(&mut out, letter)?;
                out.write_all(b"\n")?;
            }
            out.flush()
        }
        Export::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            for letter in letters {
                writer.serialize(letter).map_err(std::io::Error::other)?;
            }
            writer.flush()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(stream: &str, load: &str, field: Option<&str>, reason: &str) -> Letter {
        Letter {
            stream: stream.into(),
            load_id: load.into(),
            key: "1".into(),
            field: field.map(Into::into),
            reason: reason.into(),
            raw: "{\"a\":\n1}".into(),
        }
    }

    #[test]
    fn file_positions_do_not_split_a_group_and_the_largest_comes_first() {
        let letters = vec![
            letter("p", "l1", Some("n"), "exports/a.csv:3: not a number"),
            letter("p", "l2", Some("n"), "exports/b.csv:17: not a number"),
            letter("p", "l2", Some("seen"), "timestamp outside 0001..9999"),
            letter("p", "l2", None, "line 4: not JSON"),
        ];
        let groups = group(&letters, 1);
        assert_eq!(groups.len(), 3);
        assert_eq!(
            (groups[0].count, groups[0].reason.as_str()),
            (2, "not a number")
        );
        assert_eq!(groups[0].loads.len(), 2);
        assert_eq!(groups[0].examples.len(), 1);
        // A reason that only looks like `word: ...` keeps its words.
        assert!(groups.iter().any(|g| g.reason == "line 4: not JSON"));
        let text = render(&groups);
        assert!(text.starts_with("p: 4 dead letters\n"), "{text}");
        assert!(text.contains("2 × n: not a number (2 loads)"), "{text}");
        assert!(
            !text.contains("{\"a\":\n"),
            "raw records stay on one line: {text}"
        );
    }
}
