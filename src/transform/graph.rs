//! The model graph: every `**/NAME.sql` under the models folder, its settings (header
//! comments, overridden by `[models.NAME]`), and what it reads, found by DataFusion's SQL
//! parser (table references, CTEs excluded). Models are ordered in levels: a model's level
//! comes after every model it reads, and the models of one level may run concurrently.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use datafusion::sql::parser::DFParser;
use datafusion::sql::resolve::resolve_table_references;
use serde::Serialize;

use crate::Result;
use crate::config::{Config, Materialized, ModelsConfig};
use crate::transform::TransformError;

/// One model, as found on disk and configured.
#[derive(Debug, Clone, Serialize)]
pub struct ModelNode {
    pub name: String,
    pub file: PathBuf,
    #[serde(skip)]
    pub sql: String,
    pub materialized: Materialized,
    pub key: Option<String>,
    pub tests: Vec<ModelTest>,
    /// Streams and models the SELECT reads, by name, sorted.
    pub depends_on: Vec<String>,
}

/// A test on a model's rows (`-- tests:` or `[models.NAME] tests`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "test", rename_all = "snake_case")]
pub enum ModelTest {
    Unique {
        column: String,
    },
    NotNull {
        column: String,
    },
    AcceptedValues {
        column: String,
        values: Vec<String>,
    },
    Relationships {
        column: String,
        to: String,
        to_column: String,
    },
}

impl std::fmt::Display for ModelTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelTest::Unique { column } => write!(f, "unique({column})"),
            ModelTest::NotNull { column } => write!(f, "not_null({column})"),
            ModelTest::AcceptedValues { column, values } => {
                let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
                write!(f, "accepted_values({column}: {})", quoted.join(", "))
            }
            ModelTest::Relationships {
                column,
                to,
                to_column,
            } => write!(f, "relationships({column} -> {to}.{to_column})"),
        }
    }
}

impl ModelTest {
    /// The test's name as an orchestrator's check: `unique_id`, `accepted_values_stage`, ...
    /// (letters, digits and `_` only, as Dagster requires of a check name).
    pub fn check_name(&self) -> String {
        let (kind, column) = match self {
            ModelTest::Unique { column } => ("unique", column),
            ModelTest::NotNull { column } => ("not_null", column),
            ModelTest::AcceptedValues { column, .. } => ("accepted_values", column),
            ModelTest::Relationships { column, .. } => ("relationships", column),
        };
        let column: String = column
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("{kind}_{column}")
    }
}

/// One test of a model as a named check: what `models run` reports to an orchestrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelCheck {
    /// Unique within the model ([`ModelTest::check_name`], `_2`, `_3`... for repeats).
    pub name: String,
    /// The test as `models test` prints it.
    pub description: String,
    /// `ERROR`: a failing test keeps the model's previous table (exit 3).
    pub severity: &'static str,
    #[serde(skip)]
    pub test: ModelTest,
}

impl ModelNode {
    /// The tests run on the model's result: the declared ones, and for a materialized model
    /// with a key `not_null` and `unique` on it (a key that repeats or is missing would lose
    /// rows in the merge).
    pub fn effective_tests(&self) -> Vec<ModelTest> {
        let mut tests = self.tests.clone();
        if let Some(key) = &self.key {
            if self.materialized != Materialized::View {
                for implied in [
                    ModelTest::NotNull {
                        column: key.clone(),
                    },
                    ModelTest::Unique {
                        column: key.clone(),
                    },
                ] {
                    if !tests.contains(&implied) {
                        tests.push(implied);
                    }
                }
            }
        }
        tests
    }

    /// [`ModelNode::effective_tests`] as named checks.
    pub fn checks(&self) -> Vec<ModelCheck> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        self.effective_tests()
            .into_iter()
            .map(|test| {
                let base = test.check_name();
                let n = seen.entry(base.clone()).or_default();
                *n += 1;
                let name = if *n == 1 { base } else { format!("{base}_{n}") };
                ModelCheck {
                    name,
                    description: test.to_string(),
                    severity: "ERROR",
                    test,
                }
            })
            .collect()
    }
}

/// The models of a pipeline in dependency order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelGraph {
    /// Every model; each after the models it reads.
    pub models: Vec<ModelNode>,
    /// Indexes into `models`, level by level: a level reads only earlier levels.
    pub levels: Vec<Vec<usize>>,
}

impl ModelGraph {
    pub fn get(&self, name: &str) -> Option<&ModelNode> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The models `--select` names: `NAME`, `NAME+` (it and every model downstream of it)
    /// or `+NAME` (it and every model upstream). An unknown name is a configuration error.
    pub fn select(&self, selector: &str) -> Result<BTreeSet<String>> {
        let (name, up, down) = match (selector.strip_prefix('+'), selector.strip_suffix('+')) {
            (Some(name), _) => (name, true, false),
            (None, Some(name)) => (name, false, true),
            (None, None) => (selector, false, false),
        };
        if self.get(name).is_none() {
            return Err(TransformError::UnknownSelection {
                selector: selector.to_string(),
            }
            .into());
        }
        let mut chosen = BTreeSet::from([name.to_string()]);
        loop {
            let before = chosen.len();
            for model in &self.models {
                if up && chosen.contains(&model.name) {
                    for dep in &model.depends_on {
                        if self.get(dep).is_some() {
                            chosen.insert(dep.clone());
                        }
                    }
                }
                if down && model.depends_on.iter().any(|d| chosen.contains(d)) {
                    chosen.insert(model.name.clone());
                }
            }
            if chosen.len() == before {
                return Ok(chosen);
            }
        }
    }

    /// The models that read any of `streams`, directly or through other models.
    pub fn downstream_of(&self, streams: &[String]) -> BTreeSet<String> {
        let mut reached: BTreeSet<String> = streams.iter().cloned().collect();
        let mut chosen = BTreeSet::new();
        for model in &self.models {
            if model.depends_on.iter().any(|d| reached.contains(d)) {
                reached.insert(model.name.clone());
                chosen.insert(model.name.clone());
            }
        }
        chosen
    }
}

/// The model graph of a pipeline: the models under `[models] dir`, or without `[models]`
/// under `models/` of the working directory (what `syncline models run` reads by default;
/// `syncline plan` lists models only for pipelines with `[models]`). `dir` overrides both.
pub fn model_graph(config: &Config, dir: Option<&Path>) -> Result<ModelGraph> {
    let settings = config.models.clone().unwrap_or_default();
    let dir = dir.unwrap_or(&settings.dir);
    build_graph(dir, &settings, config.source.streams())
}

/// Reads every model under `dir` and orders them; `streams` are the names models may read
/// besides each other.
pub fn build_graph(dir: &Path, settings: &ModelsConfig, streams: &[String]) -> Result<ModelGraph> {
    let mut files = Vec::new();
    collect_sql_files(dir, &mut files)?;
    files.sort();
    let mut by_name: BTreeMap<String, ModelNode> = BTreeMap::new();
    for file in files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let sql = std::fs::read_to_string(&file).map_err(|source| TransformError::ModelFile {
            file: file.clone(),
            source,
        })?;
        if let Some(first) = by_name.get(&name) {
            return Err(TransformError::DuplicateModel {
                name,
                first: first.file.clone(),
                second: file,
            }
            .into());
        }
        // Its table would be the stream's own: a model never writes over a stream.
        if streams.contains(&name) {
            return Err(TransformError::ModelNamedLikeStream { file, name }.into());
        }
        let node = parse_model(&name, &file, &sql, settings)?;
        by_name.insert(name, node);
    }
    for (name, _) in settings.models.iter() {
        if !by_name.contains_key(name) {
            return Err(TransformError::UnknownModelSettings {
                name: name.clone(),
                dir: dir.to_path_buf(),
            }
            .into());
        }
    }
    for node in by_name.values() {
        for dep in &node.depends_on {
            if !by_name.contains_key(dep) && !streams.contains(dep) {
                return Err(TransformError::UnknownName {
                    file: node.file.clone(),
                    name: dep.clone(),
                }
                .into());
            }
        }
    }
    order(by_name)
}

/// Levels by repeated removal of models whose model dependencies are placed; what is left
/// holds a cycle, reported along its path.
fn order(mut pending: BTreeMap<String, ModelNode>) -> Result<ModelGraph> {
    let mut graph = ModelGraph::default();
    let mut placed: BTreeSet<String> = BTreeSet::new();
    while !pending.is_empty() {
        let ready: Vec<String> = pending
            .values()
            .filter(|node| {
                node.depends_on
                    .iter()
                    .all(|d| placed.contains(d) || !pending.contains_key(d))
            })
            .map(|node| node.name.clone())
            .collect();
        if ready.is_empty() {
            return Err(cycle_error(&pending).into());
        }
        let mut level = Vec::new();
        for name in ready {
            let node = pending.remove(&name).expect("ready model is pending");
            placed.insert(name);
            level.push(graph.models.len());
            graph.models.push(node);
        }
        graph.levels.push(level);
    }
    Ok(graph)
}

fn cycle_error(pending: &BTreeMap<String, ModelNode>) -> TransformError {
    // Every pending model reads another pending one: walking from any of them repeats.
    let start = pending.keys().next().expect("a cycle has a model").clone();
    let mut path = vec![start.clone()];
    let mut current = start;
    loop {
        let node = &pending[&current];
        let next = node
            .depends_on
            .iter()
            .find(|d| pending.contains_key(*d))
            .expect("a pending model reads a pending model")
            .clone();
        if let Some(at) = path.iter().position(|p| *p == next) {
            let mut cycle: Vec<String> = path[at..].to_vec();
            cycle.push(next.clone());
            let first = &pending[&path[at]];
            return TransformError::Cycle {
                file: first.file.clone(),
                name: first.name.clone(),
                path: cycle.join(" -> "),
            };
        }
        path.push(next.clone());
        current = next;
    }
}

fn collect_sql_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|source| TransformError::ModelsFolder {
        dir: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect_sql_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "sql") {
            out.push(path);
        }
    }
    Ok(())
}

/// Settings from the header comments (the leading `--` lines), then `[models.NAME]`;
/// dependencies from the parsed SELECT.
fn parse_model(name: &str, file: &Path, sql: &str, settings: &ModelsConfig) -> Result<ModelNode> {
    let mut materialized = None;
    let mut key = None;
    let mut tests = Vec::new();
    for line in sql.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix("--") else {
            break;
        };
        let Some((word, value)) = comment.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match word.trim() {
            "materialized" => {
                materialized =
                    Some(
                        Materialized::parse(value).ok_or_else(|| TransformError::Header {
                            file: file.to_path_buf(),
                            message: format!(
                                "`materialized: {value}` is not one of table, incremental, view"
                            ),
                        })?,
                    )
            }
            "key" => key = Some(value.to_string()),
            "tests" => {
                for text in split_top_level(value) {
                    tests.push(parse_test(&text).map_err(|message| TransformError::Header {
                        file: file.to_path_buf(),
                        message,
                    })?);
                }
            }
            _ => {}
        }
    }
    if let Some(configured) = settings.models.get(name) {
        if configured.materialized.is_some() {
            materialized = configured.materialized;
        }
        if configured.key.is_some() {
            key = configured.key.clone();
        }
        if let Some(list) = &configured.tests {
            tests = Vec::new();
            for text in list {
                tests.push(
                    parse_test(text).map_err(|message| TransformError::ConfiguredTest {
                        name: name.to_string(),
                        message,
                    })?,
                );
            }
        }
    }
    let materialized = materialized.unwrap_or(Materialized::Table);
    if materialized == Materialized::Incremental && key.is_none() {
        return Err(TransformError::Header {
            file: file.to_path_buf(),
            message: "materialized: incremental needs `-- key: column`".into(),
        }
        .into());
    }
    let depends_on = dependencies(file, sql)?;
    Ok(ModelNode {
        name: name.to_string(),
        file: file.to_path_buf(),
        sql: sql.trim().trim_end_matches(';').to_string(),
        materialized,
        key,
        tests,
        depends_on,
    })
}

/// The tables one SELECT reads (its own CTEs excluded), as DataFusion resolves names:
/// unquoted identifiers lower-cased, quoted ones as written.
fn dependencies(file: &Path, sql: &str) -> Result<Vec<String>> {
    let parse_error = |source| TransformError::ModelSql {
        file: file.to_path_buf(),
        source,
    };
    let statements = DFParser::parse_sql(sql).map_err(|e| parse_error(e.into()))?;
    if statements.len() != 1 {
        return Err(TransformError::NotOneSelect {
            file: file.to_path_buf(),
            statements: statements.len(),
        }
        .into());
    }
    let (relations, _ctes) = resolve_table_references(&statements[0], true).map_err(parse_error)?;
    let names: BTreeSet<String> = relations.iter().map(|r| r.to_string()).collect();
    Ok(names.into_iter().collect())
}

/// Splits `a(x), b(y: 'p, q')` at the commas outside parentheses and quotes.
fn split_top_level(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quoted = false;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        parts.push(current.trim().to_string());
    }
    parts
}

/// One test: `unique(col)`, `not_null(col)`, `accepted_values(col: 'a', 'b')`,
/// `relationships(col -> table.col)`. The error says what is wrong (no value quoted but the
/// test's own text).
pub fn parse_test(text: &str) -> std::result::Result<ModelTest, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "test `{text}` is not unique(col), not_null(col), accepted_values(col: 'a', 'b') \
             or relationships(col -> table.col)"
        )
    };
    let (kind, rest) = text.split_once('(').ok_or_else(bad)?;
    let args = rest.strip_suffix(')').ok_or_else(bad)?.trim();
    let column = |s: &str| {
        let s = s.trim().trim_matches('"');
        if s.is_empty() {
            Err(bad())
        } else {
            Ok(s.to_string())
        }
    };
    match kind.trim() {
        "unique" => Ok(ModelTest::Unique {
            column: column(args)?,
        }),
        "not_null" => Ok(ModelTest::NotNull {
            column: column(args)?,
        }),
        "accepted_values" => {
            let (col, values) = args.split_once(':').ok_or_else(bad)?;
            let values: Vec<String> = split_top_level(values)
                .into_iter()
                .map(|v| v.trim().trim_matches('\'').to_string())
                .collect();
            if values.is_empty() {
                return Err(bad());
            }
            Ok(ModelTest::AcceptedValues {
                column: column(col)?,
                values,
            })
        }
        "relationships" => {
            let (col, target) = args.split_once("->").ok_or_else(bad)?;
            let (to, to_column) = target.trim().rsplit_once('.').ok_or_else(bad)?;
            Ok(ModelTest::Relationships {
                column: column(col)?,
                to: column(to)?,
                to_column: column(to_column)?,
            })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn write(dir: &Path, file: &str, sql: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, sql).unwrap();
    }

    fn streams() -> Vec<String> {
        vec!["contacts".into(), "Opportunity".into()]
    }

    #[test]
    fn models_are_ordered_by_what_they_read_in_nested_folders() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "marts/b.sql",
            "-- materialized: table\n-- key: email\n-- tests: unique(email), accepted_values(s: 'a, b', 'c')\nSELECT email, s FROM a",
        );
        write(
            dir.path(),
            "a.sql",
            "WITH x AS (SELECT * FROM contacts) SELECT * FROM x JOIN \"Opportunity\" o ON true",
        );
        write(
            dir.path(),
            "c.sql",
            "SELECT * FROM b UNION ALL SELECT * FROM a",
        );
        let graph = build_graph(dir.path(), &ModelsConfig::default(), &streams()).unwrap();
        let names: Vec<&str> = graph.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(graph.levels, vec![vec![0], vec![1], vec![2]]);
        assert_eq!(graph.models[0].depends_on, ["Opportunity", "contacts"]);
        let b = graph.get("b").unwrap();
        assert_eq!(b.key.as_deref(), Some("email"));
        assert_eq!(
            b.tests,
            [
                ModelTest::Unique {
                    column: "email".into()
                },
                ModelTest::AcceptedValues {
                    column: "s".into(),
                    values: vec!["a, b".into(), "c".into()]
                }
            ]
        );
        assert_eq!(
            graph.select("a+").unwrap(),
            BTreeSet::from(["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            graph.select("+b").unwrap(),
            BTreeSet::from(["a".into(), "b".into()])
        );
        assert_eq!(
            graph.downstream_of(&["contacts".into()]).len(),
            3,
            "every model reads contacts through a"
        );
    }

    #[test]
    fn config_settings_override_the_header() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "m.sql", "-- materialized: view\nSELECT 1 AS id");
        let mut settings = ModelsConfig::default();
        settings.models.insert(
            "m".into(),
            crate::config::ModelSettings {
                materialized: Some(Materialized::Table),
                key: Some("id".into()),
                tests: Some(vec!["not_null(id)".into()]),
            },
        );
        let graph = build_graph(dir.path(), &settings, &streams()).unwrap();
        let m = graph.get("m").unwrap();
        assert_eq!(m.materialized, Materialized::Table);
        assert_eq!(m.tests.len(), 1);
    }

    #[test]
    fn a_cycle_names_the_file_and_the_models() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.sql", "SELECT * FROM b");
        write(dir.path(), "b.sql", "SELECT * FROM a");
        let err = build_graph(dir.path(), &ModelsConfig::default(), &streams()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Sql);
        assert_eq!(err.exit_code(), 2);
        let text = err.report();
        assert!(text.contains("a.sql"), "{text}");
        assert!(text.contains("a -> b -> a"), "{text}");
    }

    #[test]
    fn a_name_that_is_neither_stream_nor_model_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.sql",
            "SELECT * FROM contacts JOIN compnies ON true",
        );
        let err = build_graph(dir.path(), &ModelsConfig::default(), &streams()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.report();
        assert!(
            text.contains("a.sql") && text.contains("`compnies`"),
            "{text}"
        );
    }

    #[test]
    fn a_model_named_like_a_stream_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "contacts.sql", "SELECT 1 AS id");
        let err = build_graph(dir.path(), &ModelsConfig::default(), &streams()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.report().contains("contacts.sql"), "{}", err.report());
    }

    #[test]
    fn tests_parse_and_bad_ones_are_explained() {
        assert_eq!(
            parse_test("relationships(account_id -> \"Account\".Id)").unwrap(),
            ModelTest::Relationships {
                column: "account_id".into(),
                to: "Account".into(),
                to_column: "Id".into()
            }
        );
        assert!(parse_test("uniq(id)").unwrap_err().contains("uniq(id)"));
    }
}
