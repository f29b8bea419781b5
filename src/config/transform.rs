//! The per-stream transform keys (`select`, `exclude`, `rename`, `hash`, `cast`, `filter`,
//! `column_case`, `sql`) and the checks that need no column list: which keys go together,
//! that casts name a type syncline can stage, that syncline's own columns are left alone.
//! What needs the stream's columns (a name that does not exist, a dropped key) is checked by
//! `pipeline::transform` once the source has said what the columns are.

use serde::Deserialize;

use super::{KeyError, StreamSettings};
use crate::schema::{MAX_DECIMAL_PRECISION, is_system_column};

/// How `column_case` rewrites output column names (those `rename` does not set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ColumnCase {
    /// Names as the source gives them.
    #[default]
    Keep,
    /// `FirstName` becomes `firstname`.
    Lower,
    /// `FirstName` and `firstName` become `first_name`.
    Snake,
}

impl ColumnCase {
    /// The name `name` gets under this rule. syncline's own columns are never renamed.
    pub fn apply(self, name: &str) -> String {
        if is_system_column(name) {
            return name.to_string();
        }
        match self {
            ColumnCase::Keep => name.to_string(),
            ColumnCase::Lower => name.to_lowercase(),
            ColumnCase::Snake => snake_case(name),
        }
    }
}

fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let previous = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1);
            // A word starts at an upper-case letter after a lower-case one or a digit, and at
            // the last capital of an acronym followed by a lower-case letter (`HTTPServer`).
            let starts_word = match previous {
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_uppercase() => next.is_some_and(|n| n.is_lowercase()),
                _ => false,
            };
            if starts_word && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else if c == ' ' || c == '-' || c == '.' {
            if !out.ends_with('_') {
                out.push('_');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The types `cast` accepts: the ones every destination stores and the stage can hold.
pub const CAST_TYPES: &[&str] = &[
    "bigint",
    "int64",
    "integer",
    "double",
    "float64",
    "text",
    "varchar",
    "string",
    "boolean",
    "date",
    "timestamp",
];

impl StreamSettings {
    /// Whether this stream is transformed between stage and merge.
    pub fn has_transform(&self) -> bool {
        self.sql.is_some()
            || self.select.is_some()
            || !self.exclude.is_empty()
            || !self.rename.is_empty()
            || !self.hash.is_empty()
            || !self.cast.is_empty()
            || self.filter.is_some()
            || self.column_case != ColumnCase::Keep
    }

    /// The transform checks that need no column list.
    pub(super) fn validate_transform(&self, stream: &str) -> Result<(), KeyError> {
        let key =
            |name: &str| -> Vec<String> { vec!["streams".into(), stream.into(), name.into()] };
        let error = |name: &str, message: String| KeyError {
            key: key(name),
            message,
        };
        if self.sql.is_some() {
            let declarative = [
                ("select", self.select.is_some()),
                ("exclude", !self.exclude.is_empty()),
                ("rename", !self.rename.is_empty()),
                ("hash", !self.hash.is_empty()),
                ("cast", !self.cast.is_empty()),
                ("filter", self.filter.is_some()),
                ("column_case", self.column_case != ColumnCase::Keep),
            ];
            if let Some((name, _)) = declarative.iter().find(|(_, set)| *set) {
                return Err(error(
                    "sql",
                    format!(
                        "cannot be combined with `{name}`: write the whole transform in the SQL file, or use the keys alone"
                    ),
                ));
            }
        }
        if self.select.is_some() && !self.exclude.is_empty() {
            return Err(error(
                "exclude",
                "cannot be combined with `select`; use one of them".into(),
            ));
        }
        if let Some(select) = &self.select {
            if select.is_empty() {
                return Err(error("select", "lists no columns".into()));
            }
            for pattern in select {
                glob(pattern).map_err(|message| error("select", message))?;
            }
        }
        for pattern in &self.exclude {
            glob(pattern).map_err(|message| error("exclude", message))?;
            if is_system_column(pattern) {
                return Err(error(
                    "exclude",
                    format!("drops {pattern}, which every load keeps (it drives the merge)"),
                ));
            }
        }
        let mut targets = std::collections::BTreeSet::new();
        for (from, to) in &self.rename {
            if is_system_column(from) {
                return Err(error(
                    "rename",
                    format!("renames {from}, which keeps its name (it drives the merge)"),
                ));
            }
            if to.trim().is_empty() {
                return Err(error(
                    "rename",
                    format!("gives column {from} an empty name"),
                ));
            }
            if is_system_column(to) {
                return Err(error(
                    "rename",
                    format!(
                        "names column {from} {to}; names starting with _syncline_ are syncline's"
                    ),
                ));
            }
            if !targets.insert(to) {
                return Err(error("rename", format!("names two columns {to}")));
            }
        }
        for column in &self.hash {
            if is_system_column(column) {
                return Err(error(
                    "hash",
                    format!("hashes {column}, which must keep its meaning (it drives the merge)"),
                ));
            }
        }
        for (column, to) in &self.cast {
            if is_system_column(column) {
                return Err(error(
                    "cast",
                    format!("casts {column}, which must keep its type (it drives the merge)"),
                ));
            }
            let lower = to.trim().to_lowercase();
            if let Some(decimal) = decimal_cast(to) {
                decimal.map_err(|problem| {
                    error("cast", format!("casts {column} to {to:?}; {problem}"))
                })?;
            } else if !CAST_TYPES.contains(&lower.as_str()) {
                return Err(error(
                    "cast",
                    format!(
                        "casts {column} to {to:?}; the types syncline stages are {}, and \
                         decimal(P,S)",
                        CAST_TYPES.join(", ")
                    ),
                ));
            }
        }
        if let Some(filter) = &self.filter {
            if filter.trim().is_empty() {
                return Err(error("filter", "is empty".into()));
            }
        }
        Ok(())
    }
}

/// A cast to `decimal(P,S)` (also spelt `numeric` or `number`; `decimal(P)` is `decimal(P,0)`,
/// as in SQL): `None` when `to` names no decimal, else its precision and scale, or what is
/// wrong and what to write instead.
pub fn decimal_cast(to: &str) -> Option<Result<(u8, u8), String>> {
    let lower = to.trim().to_lowercase();
    let rest = ["decimal", "numeric", "number"]
        .iter()
        .find_map(|name| lower.strip_prefix(name))?
        .trim();
    const EXAMPLE: &str = "decimal(18,2) holds 18 digits, 2 of them after the point";
    if rest.is_empty() {
        return Some(Err(format!(
            "a decimal needs its digits: write decimal(P,S), P digits (at most \
             {MAX_DECIMAL_PRECISION}) with S of them after the point ({EXAMPLE})"
        )));
    }
    let Some(inner) = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) else {
        return Some(Err(format!(
            "write decimal(P,S), P digits with S of them after the point ({EXAMPLE})"
        )));
    };
    let (precision, scale) = match inner.split_once(',') {
        Some((p, s)) => (p.trim(), s.trim()),
        None => (inner.trim(), "0"),
    };
    let (Ok(precision), Ok(scale)) = (precision.parse::<u32>(), scale.parse::<u32>()) else {
        return Some(Err(format!(
            "the precision and scale must be whole numbers: write decimal(P,S) ({EXAMPLE})"
        )));
    };
    if precision == 0 || precision > u32::from(MAX_DECIMAL_PRECISION) {
        return Some(Err(format!(
            "a decimal holds 1 to {MAX_DECIMAL_PRECISION} digits, which is what Snowflake and \
             Delta store: write decimal(P,{scale}) with P at most {MAX_DECIMAL_PRECISION}, or \
             cast to text to keep every digit"
        )));
    }
    if scale > precision {
        return Some(Err(format!(
            "the scale ({scale} digits after the point) is more than the precision ({precision} \
             digits in all): write decimal({scale},{scale}) or more digits, e.g. \
             decimal({},{scale})",
            (scale + precision).min(u32::from(MAX_DECIMAL_PRECISION))
        )));
    }
    // Both are at most 38 here.
    Some(Ok((precision as u8, scale as u8)))
}

/// Checks a `select`/`exclude` pattern; the message says what is wrong.
fn glob(pattern: &str) -> Result<globset::GlobMatcher, String> {
    globset::Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("pattern {pattern:?} is not a glob: {}", e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_casts_take_precision_and_scale_up_to_38_digits() {
        for (to, expected) in [
            ("decimal(18,2)", (18, 2)),
            ("NUMERIC(38, 0)", (38, 0)),
            (" number( 10 , 10 ) ", (10, 10)),
            ("decimal(12)", (12, 0)),
        ] {
            assert_eq!(decimal_cast(to), Some(Ok(expected)), "{to}");
        }
        for not_decimal in ["double", "bigint", "text"] {
            assert_eq!(decimal_cast(not_decimal), None, "{not_decimal}");
        }
        for (to, says) in [
            ("decimal", "needs its digits"),
            ("numeric(39,2)", "1 to 38 digits"),
            ("decimal(0,0)", "1 to 38 digits"),
            ("decimal(2,3)", "more than the precision"),
            ("decimal(a,b)", "whole numbers"),
            ("decimal(18,-2)", "whole numbers"),
            ("decimal 18 2", "write decimal(P,S)"),
        ] {
            let problem = decimal_cast(to).unwrap().unwrap_err();
            assert!(problem.contains(says), "{to}: {problem}");
        }
    }

    #[test]
    fn snake_case_splits_words_and_acronyms() {
        for (name, snake) in [
            ("FirstName", "first_name"),
            ("firstName", "first_name"),
            ("lifecyclestage", "lifecyclestage"),
            ("HTTPServer", "http_server"),
            ("Account ID", "account_id"),
            ("hs_object_id", "hs_object_id"),
            ("Custom__c", "custom__c"),
            ("_syncline_version", "_syncline_version"),
        ] {
            assert_eq!(ColumnCase::Snake.apply(name), snake, "{name}");
        }
        assert_eq!(ColumnCase::Lower.apply("FirstName"), "firstname");
    }
}
