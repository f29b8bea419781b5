//! `[source]` with `type = "files"`: the keys, their defaults, and their validation.
//!
//! Validation returns the dotted key to fix (`source.files.contacts.glob`) so the config
//! loader can point at its line; see [`FilesConfig::validate`].

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::config::{KeyError, decimal_cast};
use crate::schema::is_system_column;
use crate::storage::S3Config;

/// `[source]` with `type = "files"`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// The folder the exports are in: any object_store URL (`file:///data/exports`,
    /// `s3://bucket/exports`). Globs match paths relative to it.
    pub url: String,
    /// S3 settings for an `s3://` URL, the same keys as `[staging.s3]`.
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// Stream names; each needs a `[source.files.NAME]` table.
    pub streams: Vec<String>,
    /// `[source.files.NAME]`, one per stream.
    #[serde(default)]
    pub files: BTreeMap<String, FileStreamConfig>,
}

/// `[source.files.NAME]`: which files make up a stream and how to read them.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileStreamConfig {
    /// Glob over paths relative to `source.url`, e.g. `contacts/*.jsonl` or `**/deals-*.csv`.
    pub glob: String,
    /// `"csv"` or `"jsonl"` (one JSON object per line).
    pub format: String,
    /// The column that identifies a record.
    pub key: String,
    /// Optional column ordering the records (integer or timestamp): rows below the saved
    /// cursor are skipped; rows at it are read again and de-duplicated by the merge.
    pub cursor_column: Option<String>,
    /// Optional timestamp (or epoch-milliseconds integer) column giving each record's
    /// version; default the file's last-modified time.
    pub version_column: Option<String>,
    /// Optional boolean column: true marks the record as deleted.
    pub deleted_column: Option<String>,
    /// Records sampled from the first matching file to infer the schema when none is
    /// declared. Default 1000.
    #[serde(default = "default_infer_rows")]
    pub infer_rows: usize,
    /// Declared columns, in file order: name → `int64`, `float64`, `utf8`, `boolean`,
    /// `date32`, `timestamp` or `decimal(P,S)` (also `numeric(P,S)`). Inferred from a sample
    /// when absent.
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub schema: Option<DeclaredSchema>,
    /// CSV: the field delimiter, one character. Default `,`.
    pub delimiter: Option<String>,
    /// CSV: the quote character. Default `"`.
    pub quote: Option<String>,
    /// CSV: whether the first line names the columns. Default true.
    pub header: Option<bool>,
    /// CSV: field values read as null. Default `[""]`.
    pub null_values: Option<Vec<String>>,
    /// The longest record read, in bytes (a JSONL line without its newline; a CSV record,
    /// quoted line breaks included). A longer one is a dead letter, skipped without being
    /// held in memory: JSONL goes on at the next line; a CSV record this long is taken for an
    /// unclosed quote, so the rest of the file is that one dead letter. Default 16 MiB.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
}

fn default_infer_rows() -> usize {
    1000
}

fn default_max_record_bytes() -> usize {
    16 << 20
}

/// Declared columns, in the order the config lists them once
/// [`FilesConfig::order_declared_columns`] ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredSchema(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for DeclaredSchema {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Columns;
        impl<'de> Visitor<'de> for Columns {
            type Value = DeclaredSchema;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of column = \"type\"")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DeclaredSchema, A::Error> {
                let mut columns = Vec::new();
                while let Some((name, kind)) = map.next_entry::<String, String>()? {
                    columns.push((name, kind));
                }
                Ok(DeclaredSchema(columns))
            }
        }
        deserializer.deserialize_map(Columns)
    }
}

/// The file formats read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

/// The column types a declared schema may name (the staged type set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Int64,
    Float64,
    Utf8,
    Boolean,
    Date32,
    Timestamp,
    /// `decimal(P,S)`: P digits (1 to 38), S of them after the point, staged exactly.
    Decimal(u8, u8),
}

impl ColumnType {
    pub const NAMES: &'static str =
        "int64, float64, utf8, boolean, date32, timestamp or decimal(P,S)";

    /// The type a name declares; a decimal spelling with impossible digits is `None` (see
    /// [`decimal_problem`] for what to write instead).
    pub fn parse(name: &str) -> Option<ColumnType> {
        Some(match name {
            "int64" => ColumnType::Int64,
            "float64" => ColumnType::Float64,
            "utf8" => ColumnType::Utf8,
            "boolean" => ColumnType::Boolean,
            "date32" => ColumnType::Date32,
            "timestamp" => ColumnType::Timestamp,
            // The stream `cast`'s own reading of the spelling, so a type written for one is
            // understood the same by the other.
            _ => match decimal_cast(name)? {
                Ok((precision, scale)) => ColumnType::Decimal(precision, scale),
                Err(_) => return None,
            },
        })
    }
}

/// What is wrong with a declared decimal (`decimal(40,2)`, `numeric(4,6)`, `decimal`) and
/// what to write instead; `None` for any other name.
fn decimal_problem(name: &str) -> Option<String> {
    decimal_cast(name)?.err()
}

impl FilesConfig {
    /// The stream's table; validation guarantees every listed stream has one.
    pub fn stream(&self, stream: &str) -> Option<&FileStreamConfig> {
        self.files.get(stream)
    }

    /// Puts declared columns back in document order: TOML tables reach serde sorted by
    /// name. `line_of` finds the line of a dotted key in the config text.
    pub fn order_declared_columns(&mut self, line_of: impl Fn(&[&str]) -> Option<usize>) {
        for (stream, table) in &mut self.files {
            if let Some(schema) = &mut table.schema {
                schema.0.sort_by_key(|(column, _)| {
                    line_of(&["source", "files", stream, "schema", column]).unwrap_or(usize::MAX)
                });
            }
        }
    }

    /// Checks what parsing cannot: every stream has a table, globs compile, formats and
    /// types are known, and the named columns exist with usable types.
    pub fn validate(&self) -> Result<(), KeyError> {
        let error = |key: &[&str], message: String| KeyError {
            key: key.iter().map(|k| k.to_string()).collect(),
            message,
        };
        if let Err(e) = url::Url::parse(&self.url) {
            return Err(error(
                &["source", "url"],
                format!("not a URL ({e}); use e.g. file:///data/exports or s3://bucket/exports"),
            ));
        }
        for stream in &self.streams {
            if !self.files.contains_key(stream) {
                return Err(error(
                    &["source", "streams"],
                    format!(
                        "lists {stream:?}, which has no [source.files.{stream}] table (glob, format, key)"
                    ),
                ));
            }
        }
        for (stream, table) in &self.files {
            let key = |name: &'static str| -> Vec<&str> { vec!["source", "files", stream, name] };
            if !self.streams.contains(stream) {
                return Err(error(
                    &["source", "files", stream],
                    format!("stream {stream:?} is not listed in source.streams"),
                ));
            }
            table
                .validate(stream)
                .map_err(|(name, message)| match name {
                    KeyName::Field(name) => error(&key(name), message),
                    KeyName::Column(column) => {
                        error(&["source", "files", stream, "schema", &column], message)
                    }
                })?;
        }
        Ok(())
    }
}

/// Which key of a stream table an error is about.
enum KeyName {
    Field(&'static str),
    Column(String),
}

impl FileStreamConfig {
    /// The format; call after validation.
    pub fn format(&self) -> Format {
        match self.format.as_str() {
            "csv" => Format::Csv,
            _ => Format::Jsonl,
        }
    }

    /// The declared columns with their types; call after validation.
    pub fn declared(&self) -> Option<Vec<(String, ColumnType)>> {
        self.schema.as_ref().map(|s| {
            s.0.iter()
                .map(|(name, kind)| {
                    (
                        name.clone(),
                        ColumnType::parse(kind).unwrap_or(ColumnType::Utf8),
                    )
                })
                .collect()
        })
    }

    pub fn delimiter(&self) -> u8 {
        single_byte(self.delimiter.as_deref()).unwrap_or(b',')
    }

    pub fn quote(&self) -> u8 {
        single_byte(self.quote.as_deref()).unwrap_or(b'"')
    }

    pub fn header(&self) -> bool {
        self.header.unwrap_or(true)
    }

    pub fn null_values(&self) -> Vec<String> {
        self.null_values
            .clone()
            .unwrap_or_else(|| vec![String::new()])
    }

    fn validate(&self, stream: &str) -> Result<(), (KeyName, String)> {
        use KeyName::Field;
        if let Err(e) = globset::Glob::new(&self.glob) {
            return Err((Field("glob"), format!("is not a valid glob: {}", e.kind())));
        }
        if self.glob.starts_with('/') {
            return Err((
                Field("glob"),
                "must be relative to source.url (no leading `/`)".into(),
            ));
        }
        let format = match self.format.as_str() {
            "csv" => Format::Csv,
            "jsonl" => Format::Jsonl,
            other => {
                return Err((
                    Field("format"),
                    format!("{other:?} is not a known format; use \"csv\" or \"jsonl\""),
                ));
            }
        };
        if format == Format::Jsonl {
            for (name, set) in [
                ("delimiter", self.delimiter.is_some()),
                ("quote", self.quote.is_some()),
                ("header", self.header.is_some()),
                ("null_values", self.null_values.is_some()),
            ] {
                if set {
                    return Err((Field(name), "applies only to format = \"csv\"".into()));
                }
            }
        }
        for (name, value) in [("delimiter", &self.delimiter), ("quote", &self.quote)] {
            if let Some(value) = value {
                if single_byte(Some(value)).is_none() {
                    return Err((
                        Field(name),
                        "must be exactly one ASCII character, e.g. \",\" or \"\\t\"".into(),
                    ));
                }
            }
        }
        if self.infer_rows == 0 {
            return Err((Field("infer_rows"), "must be at least 1".into()));
        }
        if self.max_record_bytes == 0 {
            return Err((Field("max_record_bytes"), "must be at least 1".into()));
        }
        if self.key.is_empty() {
            return Err((Field("key"), "is empty".into()));
        }
        for (name, column) in [
            ("key", Some(&self.key)),
            ("cursor_column", self.cursor_column.as_ref()),
            ("version_column", self.version_column.as_ref()),
            ("deleted_column", self.deleted_column.as_ref()),
        ] {
            if column.is_some_and(|c| is_system_column(c)) {
                return Err((
                    Field(name),
                    "names a column starting with `_syncline_`, which syncline reserves".into(),
                ));
            }
        }
        let Some(schema) = &self.schema else {
            if self.header == Some(false) {
                return Err((
                    Field("header"),
                    format!(
                        "is false, so the columns have no names: declare them in [source.files.{stream}.schema]"
                    ),
                ));
            }
            return Ok(());
        };
        for (i, (name, kind)) in schema.0.iter().enumerate() {
            if let Some(problem) = decimal_problem(kind) {
                return Err((
                    KeyName::Column(name.clone()),
                    format!("type {kind:?}: {problem}"),
                ));
            }
            if ColumnType::parse(kind).is_none() {
                return Err((
                    KeyName::Column(name.clone()),
                    format!("type {kind:?} is not one of {}", ColumnType::NAMES),
                ));
            }
            if is_system_column(name) {
                return Err((
                    KeyName::Column(name.clone()),
                    "starts with `_syncline_`, which syncline reserves".into(),
                ));
            }
            if schema.0[..i].iter().any(|(n, _)| n == name) {
                return Err((KeyName::Column(name.clone()), "is declared twice".into()));
            }
        }
        let declared = self.declared().unwrap_or_default();
        let type_of = |name: &'static str, column: &str| {
            declared
                .iter()
                .find(|(n, _)| n == column)
                .map(|(_, t)| *t)
                .ok_or_else(|| {
                    (
                        Field(name),
                        format!(
                            "names {column:?}, which [source.files.{stream}.schema] does not declare"
                        ),
                    )
                })
        };
        let key_type = type_of("key", &self.key)?;
        if !matches!(key_type, ColumnType::Int64 | ColumnType::Utf8) {
            return Err((
                KeyName::Column(self.key.clone()),
                "is the key, so it must be int64 or utf8".into(),
            ));
        }
        if let Some(column) = &self.cursor_column {
            if !matches!(
                type_of("cursor_column", column)?,
                ColumnType::Int64 | ColumnType::Timestamp
            ) {
                return Err((
                    Field("cursor_column"),
                    format!("names {column:?}, which must be int64 or timestamp"),
                ));
            }
        }
        if let Some(column) = &self.version_column {
            if !matches!(
                type_of("version_column", column)?,
                ColumnType::Int64 | ColumnType::Timestamp
            ) {
                return Err((
                    Field("version_column"),
                    format!(
                        "names {column:?}, which must be timestamp (or int64 epoch milliseconds)"
                    ),
                ));
            }
        }
        if let Some(column) = &self.deleted_column {
            if type_of("deleted_column", column)? != ColumnType::Boolean {
                return Err((
                    Field("deleted_column"),
                    format!("names {column:?}, which must be boolean"),
                ));
            }
        }
        Ok(())
    }
}

/// The byte of a one-character ASCII option (`"\t"` in TOML is a tab).
fn single_byte(value: Option<&str>) -> Option<u8> {
    match value?.as_bytes() {
        [b] if b.is_ascii() => Some(*b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, SourceConfig};

    fn parse(tables: &str) -> crate::Result<Config> {
        let text = format!(
            "[pipeline]\nname = \"files\"\n[staging]\nurl = \"file:///tmp/stage\"\n\
             [destination]\ntype = \"postgres\"\nurl = \"postgres://u@localhost/db\"\n\
             [source]\ntype = \"files\"\nurl = \"file:///data/exports\"\nstreams = [\"contacts\"]\n{tables}"
        );
        Config::parse(&text, Path::new("files.toml"), &|_| None)
    }

    #[test]
    fn declared_columns_keep_the_config_order() {
        let config = parse(
            "[source.files.contacts]\nglob = \"*.csv\"\nformat = \"csv\"\nkey = \"id\"\nheader = false\n\
             [source.files.contacts.schema]\nzeta = \"utf8\"\nid = \"int64\"\n\"alpha beta\" = \"date32\"\n\
             amount = \"numeric(18, 2)\"\n",
        )
        .unwrap();
        let SourceConfig::Files(files) = &config.source else {
            panic!("files source")
        };
        let declared = files.stream("contacts").unwrap().declared().unwrap();
        let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["zeta", "id", "alpha beta", "amount"]);
        assert_eq!(declared[3].1, super::ColumnType::Decimal(18, 2));
    }

    #[test]
    fn mistakes_name_the_key_and_line() {
        let stream = "[source.files.contacts]\nglob = \"*.csv\"\nformat = \"csv\"\nkey = \"id\"\n";
        let cases = [
            (
                stream.replace("*.csv", "[z-a]"),
                "files.toml:13: `source.files.contacts.glob`",
            ),
            (
                stream.replace("\"csv\"", "\"parquet\""),
                "files.toml:14: `source.files.contacts.format`",
            ),
            (
                format!("{stream}[source.files.contacts.schema]\nname = \"utf8\"\n"),
                "files.toml:15: `source.files.contacts.key` names \"id\", which [source.files.contacts.schema] does not declare",
            ),
            (
                format!("{stream}[source.files.contacts.schema]\nid = \"float64\"\n"),
                "files.toml:17: `source.files.contacts.schema.id` is the key, so it must be int64 or utf8",
            ),
            (
                format!(
                    "{stream}cursor_column = \"at\"\n[source.files.contacts.schema]\nid = \"int64\"\nat = \"boolean\"\n"
                ),
                "files.toml:16: `source.files.contacts.cursor_column` names \"at\", which must be int64 or timestamp",
            ),
            (
                format!(
                    "{stream}[source.files.contacts.schema]\nid = \"int64\"\namount = \"decimal(40,2)\"\n"
                ),
                "files.toml:18: `source.files.contacts.schema.amount` type \"decimal(40,2)\": a decimal holds 1 to 38 digits",
            ),
            (
                format!(
                    "{stream}[source.files.contacts.schema]\nid = \"int64\"\namount = \"numeric(4,6)\"\n"
                ),
                "`source.files.contacts.schema.amount` type \"numeric(4,6)\": the scale (6 digits after the point) is more than the precision",
            ),
            (
                format!("{stream}header = false\n"),
                "`source.files.contacts.header` is false",
            ),
            (
                format!("{stream}delimiter = \"::\"\n"),
                "`source.files.contacts.delimiter` must be exactly one",
            ),
            (
                String::new(),
                "`source.streams` lists \"contacts\", which has no [source.files.contacts] table",
            ),
            (
                format!(
                    "{stream}[source.files.deals]\nglob = \"*\"\nformat = \"csv\"\nkey = \"id\"\n"
                ),
                "`source.files.deals` stream \"deals\" is not listed",
            ),
        ];
        for (tables, wanted) in cases {
            let err = parse(&tables).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Config, "{err}");
            assert!(err.to_string().contains(wanted), "{tables}\n{err}");
        }
    }
}
