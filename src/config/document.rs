//! The config text kept beside the parsed values, to point errors at a file, line and key.

use std::path::{Path, PathBuf};

use super::ConfigError;

/// The config text, kept to point errors at lines.
pub(super) struct Document<'a> {
    text: &'a str,
    path: PathBuf,
}

impl<'a> Document<'a> {
    pub(super) fn new(text: &'a str, path: &Path) -> Self {
        Document {
            text,
            path: path.to_path_buf(),
        }
    }

    /// The 1-based line that assigns `key`, if the text has one.
    pub(super) fn key_line(&self, key: &[&str]) -> Option<usize> {
        find_key_line(self.text, key)
    }

    pub(super) fn parse_error(&self, err: &toml::de::Error) -> ConfigError {
        // Only the message and position: toml's own rendering quotes the source line, which
        // could hold a literal secret.
        match err.span() {
            Some(span) => {
                let (mut line, mut col) = line_col(self.text, span.start);
                // Inside a `type`-tagged table toml can only point at the table; find the key.
                if let Some(field) = unknown_field(err.message()) {
                    if let Some(found) = find_key_in_table(self.text, line, field) {
                        (line, col) = (found, 1);
                    }
                }
                ConfigError::Syntax {
                    at: format!("{}:{line}:{col}", self.path.display()),
                    message: err.message().to_string(),
                }
            }
            None => ConfigError::Syntax {
                at: self.path.display().to_string(),
                message: err.message().to_string(),
            },
        }
    }

    pub(super) fn key_error(&self, key: &[&str], message: &str) -> ConfigError {
        let at = match find_key_line(self.text, key) {
            Some(line) => format!("{}:{line}", self.path.display()),
            None => self.path.display().to_string(),
        };
        ConfigError::Key {
            at,
            key: key.join("."),
            message: message.to_string(),
        }
    }
}

/// The field name in serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

/// The line (1-based) at or after `from` that assigns `field`, before the next table header.
fn find_key_in_table(text: &str, from: usize, field: &str) -> Option<usize> {
    for (i, raw) in text.lines().enumerate().skip(from.saturating_sub(1)) {
        let line = raw.trim();
        if line.starts_with('[') && i + 1 > from {
            return None;
        }
        if let Some((lhs, _)) = line.split_once('=') {
            if lhs.trim().trim_matches('"') == field {
                return Some(i + 1);
            }
        }
    }
    None
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// The 1-based line that assigns `key` (`[a.b]` header then `c = ...`, or `[a]` then
/// `b.c = ...`), or the header line of a table key such as `streams.contacts`.
fn find_key_line(text: &str, key: &[&str]) -> Option<usize> {
    let mut table: Vec<String> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = header
                .trim()
                .trim_start_matches('[')
                .split('.')
                .map(|p| p.trim().trim_matches('"').to_string())
                .collect();
            if table == key {
                return Some(i + 1);
            }
            continue;
        }
        let Some((lhs, _)) = line.split_once('=') else {
            continue;
        };
        if line.starts_with('#') {
            continue;
        }
        let mut full = table.clone();
        full.extend(
            lhs.trim()
                .split('.')
                .map(|p| p.trim().trim_matches('"').to_string()),
        );
        if full == key {
            return Some(i + 1);
        }
    }
    None
}
