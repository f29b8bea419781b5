//! Stream transforms: a stream's `select`/`exclude`/`rename`/`hash`/`cast`/`filter`/
//! `column_case` keys, or its `sql` file, compiled into one DataFusion plan that runs over the
//! staged raw Parquet of a load and writes the transformed load beside it
//! (`{load}/transformed/part-*.parquet`). The transformed files are what the destination
//! merges; the raw files stay staged as the audit copy.
//!
//! Checked in two steps, both before the source is asked for a record: [`StreamTransform::
//! prepare`] reads the SQL file and parses the SQL and the filter (no source call at all), and
//! [`StreamTransform::compile`] plans the transform against the columns the source discovers:
//! a column that does not exist, or a key, `_syncline_version` or `_syncline_deleted` that
//! does not come through unchanged, is a configuration error naming the stream, the key or
//! file and the column.
//!
//! Deletes pass every filter: a filter applies to live rows only, so a delete for a row that
//! the filter would now drop still reaches the destination (with the key under its output name).
//!
//! Reconciliation: the declarative form counts and checksums the rows its filter drops as it
//! runs, so `raw = transformed + filtered` is checked, not assumed; a SQL file's dropped rows
//! are the difference (a SQL transform that makes more rows than it read is a mismatch).
//! Fed while the load is staged, the declarative form carries each raw row's hash through its
//! plan in a column of its own ([`ROW_HASH_COLUMN`], never written): it cannot change the key,
//! version or delete flag a row's hash covers, so the rows it keeps and drops are summed from
//! what the staging hashed, not hashed again. Whatever the plan did to the rows themselves, the
//! destination's own fingerprint of what it received must still equal the transformed one.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{filter_record_batch, not};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, UInt64Type};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::{Column, ScalarValue, SchemaError, TableReference};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility, cast, lit,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use object_store::path::Path;
use tracing::info;

use crate::config::{Config, StreamSettings};
use crate::error::{Classified, ErrorKind};
use crate::reconcile::{Fingerprint, batch_fingerprint, carried_fingerprint, row_hashes};
use crate::schema::{
    DELETED_COLUMN, MAX_DECIMAL_PRECISION, VERSION_COLUMN, is_system_column, timestamp_type,
};
use crate::stage::{ColumnSpec, LoadWriter, Stage, StagedFile, columns_of};
use crate::{Error, Result};

/// The column a declarative plan adds to say whether a row is kept (a delete, or a live row
/// the filter passes); never written.
const KEEP_COLUMN: &str = "__syncline_keep";
/// The column a declarative plan fed by the staging carries each raw row's
/// [`row_hash`](crate::reconcile::row_hash) in; never written.
const ROW_HASH_COLUMN: &str = "__syncline_row_hash";
/// The name the raw rows are registered under for a SQL transform (the stream's own name is
/// a view of its live rows).
const RAW_TABLE: &str = "__syncline_raw";
/// The environment variable whose value salts `hash`; read when a plan runs, never logged.
pub const HASH_SALT_VAR: &str = "SYNCLINE_HASH_SALT";

/// A transform that cannot be used, or that did not hold.
#[derive(Debug, thiserror::Error)]
pub enum StreamTransformError {
    #[error("stream {stream}: cannot read the transform {}", file.display())]
    ReadSql {
        stream: String,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stream {stream}: {} does not parse", file.display())]
    ParseSql {
        stream: String,
        file: PathBuf,
        #[source]
        source: DataFusionError,
    },
    #[error("stream {stream}: {} must hold exactly one SELECT", file.display())]
    NotOneSelect { stream: String, file: PathBuf },
    #[error("stream {stream}: `streams.{stream}.filter` does not parse")]
    ParseFilter {
        stream: String,
        #[source]
        source: DataFusionError,
    },
    #[error("stream {stream}: `streams.{stream}.filter` is not a true/false condition")]
    FilterNotBoolean { stream: String },
    #[error("stream {stream}: {origin} names column {column}, which the stream does not have")]
    MissingColumn {
        stream: String,
        origin: String,
        column: String,
    },
    #[error(
        "stream {stream}: {origin} drops column {column}, which every load keeps (the key, {VERSION_COLUMN} and {DELETED_COLUMN} drive the merge)"
    )]
    Drops {
        stream: String,
        origin: String,
        column: String,
    },
    #[error(
        "stream {stream}: {origin} changes column {column}, which must come through with its values (it drives the merge)"
    )]
    Changes {
        stream: String,
        origin: String,
        column: String,
    },
    #[error("stream {stream}: {origin} gives two output columns the name {column}")]
    DuplicateColumn {
        stream: String,
        origin: String,
        column: String,
    },
    #[error(
        "stream {stream}: {origin} makes column {column} of type {data_type}, which cannot be staged; cast it to bigint, double, text, boolean, date, timestamp or decimal(P,S) with P at most 38"
    )]
    Unstageable {
        stream: String,
        origin: String,
        column: String,
        data_type: DataType,
    },
    #[error("stream {stream}: {origin} does not plan")]
    Plan {
        stream: String,
        origin: String,
        #[source]
        source: DataFusionError,
    },
    /// DataFusion's own words are left out: a failed cast quotes the value.
    #[error(
        "stream {stream}: the transform failed on the staged rows of load {load_id} (a value a cast cannot convert, or a staged file that cannot be read); the raw load stays staged"
    )]
    Execute { stream: String, load_id: String },
    #[error(
        "stream {stream}: load {load_id} read {} raw rows (checksum {}) but the transform wrote {} (checksum {}) and filtered {} (checksum {}); nothing is merged",
        raw.rows, raw.checksum, transformed.rows, transformed.checksum, filtered.rows, filtered.checksum
    )]
    Differs {
        stream: String,
        load_id: String,
        raw: Fingerprint,
        transformed: Fingerprint,
        filtered: Fingerprint,
    },
    #[error(
        "stream {stream} has a transform: `syncline reconcile` compares source records with the destination key by key, which a transformed table does not hold (filtered rows, hashed or renamed columns); each load is still reconciled at every hop"
    )]
    NotReconcilable { stream: String },
    #[error("stream {stream} has no staged load to preview; run it first")]
    NothingStaged { stream: String },
    #[error(
        "stream {stream} has no transform to preview (no transform keys in [streams.{stream}])"
    )]
    NoTransform { stream: String },
}

impl Classified for StreamTransformError {
    fn kind(&self) -> ErrorKind {
        use StreamTransformError::*;
        match self {
            Execute { .. } => ErrorKind::Stage,
            Differs { .. } => ErrorKind::Reconciliation,
            _ => ErrorKind::Config,
        }
    }
}

/// A stream's transform as configured, its SQL file read and parsed.
#[derive(Debug, Clone)]
pub struct StreamTransform {
    stream: String,
    settings: StreamSettings,
    /// The SQL file's text, for a `sql` transform.
    sql: Option<String>,
}

/// A transform planned against a stream's columns: what the load will look like.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The key column's name in the output (the destination table's key).
    pub key: String,
    /// The output columns, without the internal keep flag.
    pub schema: SchemaRef,
}

/// What running a transform over a load wrote, and its figures.
#[derive(Debug, Clone)]
pub struct Transformed {
    pub key: String,
    pub schema: Vec<ColumnSpec>,
    pub files: Vec<StagedFile>,
    /// Read back from the transformed files.
    pub transformed: Fingerprint,
    pub filtered: Fingerprint,
}

/// The raw load a transform reads.
#[derive(Debug, Clone)]
pub struct RawLoad<'a> {
    pub load_id: &'a str,
    pub key: &'a str,
    pub schema: SchemaRef,
    pub files: &'a [StagedFile],
    pub fingerprint: Fingerprint,
}

impl StreamTransform {
    /// The transform of `stream`, or `None` when it has none. Reads and parses the SQL file
    /// and the filter; asks nothing of the source.
    pub fn prepare(config: &Config, stream: &str) -> Result<Option<StreamTransform>> {
        let settings = config.stream_settings(stream);
        if !settings.has_transform() {
            return Ok(None);
        }
        let sql = match &settings.sql {
            None => None,
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|source| {
                    StreamTransformError::ReadSql {
                        stream: stream.to_string(),
                        file: file.clone(),
                        source,
                    }
                })?;
                let statements =
                    datafusion::sql::parser::DFParser::parse_sql(&text).map_err(|e| {
                        StreamTransformError::ParseSql {
                            stream: stream.to_string(),
                            file: file.clone(),
                            source: e.into(),
                        }
                    })?;
                let one_query = statements.len() == 1
                    && matches!(
                        statements.front(),
                        Some(datafusion::sql::parser::Statement::Statement(s))
                            if matches!(**s, datafusion::sql::sqlparser::ast::Statement::Query(_))
                    );
                if !one_query {
                    return Err(StreamTransformError::NotOneSelect {
                        stream: stream.to_string(),
                        file: file.clone(),
                    }
                    .into());
                }
                Some(text)
            }
        };
        if let Some(filter) = &settings.filter {
            parse_filter(stream, filter)?;
        }
        Ok(Some(StreamTransform {
            stream: stream.to_string(),
            settings,
            sql,
        }))
    }

    /// Plans the transform over a stream of `schema` keyed by `key` (no rows read): every
    /// configuration mistake that needs the column list shows here.
    pub async fn compile(&self, schema: &SchemaRef, key: &str) -> Result<Compiled> {
        let ctx = session(1024);
        let empty =
            MemTable::try_new(schema.clone(), vec![vec![]]).map_err(|e| self.plan_error(e))?;
        let raw = ctx
            .read_table(Arc::new(empty))
            .map_err(|e| self.plan_error(e))?;
        let planned = self.plan(&ctx, raw, key).await?;
        let schema = Arc::new(planned.output_schema());
        Ok(Compiled {
            key: planned.key,
            schema,
        })
    }

    /// Runs the transform over a staged raw load, writing the transformed load under `dir`
    /// in files of at most `file_rows` rows, batch by batch (memory holds a batch, not the
    /// load), then checks `raw = transformed + filtered`.
    pub async fn run(
        &self,
        stage: &Stage,
        raw: RawLoad<'_>,
        dir: Path,
        batch_rows: usize,
        file_rows: usize,
    ) -> Result<Transformed> {
        let ctx = session(batch_rows);
        let frame = read_staged(&ctx, stage, &raw)
            .await
            .map_err(|_| self.failed(raw.load_id))?;
        let planned = self.plan(&ctx, frame, raw.key).await?;
        let written = self
            .write(stage, planned, raw.load_id, dir, file_rows, None)
            .await?;
        self.check(raw.load_id, raw.fingerprint, written)
    }

    /// Starts the transform over the raw load as it is staged: every batch sent to the
    /// returned feed is transformed, written under `dir` beside the raw files, and (when
    /// `copy` is given) sent on to the destination's copy, in a task of its own so the
    /// transform and its Parquet run on another core than the extraction. Planned before it
    /// returns, so a transform that does not plan stops the load before any row is read.
    pub async fn start(
        &self,
        stage: &Stage,
        raw: SchemaRef,
        key: &str,
        load_id: &str,
        dir: Path,
        (batch_rows, file_rows): (usize, usize),
        copy: Option<CopyFeed>,
    ) -> Result<(RawFeed, Running)> {
        let ctx = session(batch_rows);
        let (batches, fed) = tokio::sync::mpsc::channel(FEED_AHEAD_BATCHES);
        // A SQL file's SELECT would pass the column on (`SELECT *`) or lose it (a join).
        let with_row_hashes = self.sql.is_none().then(|| {
            let mut fields = raw.fields().to_vec();
            fields.push(Arc::new(Field::new(
                ROW_HASH_COLUMN,
                DataType::UInt64,
                false,
            )));
            Arc::new(Schema::new_with_metadata(fields, raw.metadata().clone()))
        });
        let raw = with_row_hashes.clone().unwrap_or(raw);
        let fed = FedPartition {
            schema: raw.clone(),
            batches: std::sync::Mutex::new(Some(fed)),
        };
        let table =
            StreamingTable::try_new(raw, vec![Arc::new(fed)]).map_err(|e| self.plan_error(e))?;
        let frame = ctx
            .read_table(Arc::new(table))
            .map_err(|e| self.plan_error(e))?;
        let planned = self.plan(&ctx, frame, key).await?;
        let transform = self.clone();
        let stage = stage.clone();
        let load = load_id.to_string();
        let task = tokio::spawn(async move {
            transform
                .write(&stage, planned, &load, dir, file_rows, copy)
                .await
        });
        Ok((
            RawFeed {
                batches,
                with_row_hashes,
            },
            Running {
                transform: self.clone(),
                load_id: load_id.to_string(),
                task: Some(task),
            },
        ))
    }

    /// Executes a plan, writes its kept rows under `dir/transformed`, counts what its filter
    /// drops, and confirms the written files by their footers.
    async fn write(
        &self,
        stage: &Stage,
        planned: Planned,
        load_id: &str,
        dir: Path,
        file_rows: usize,
        mut copy: Option<CopyFeed>,
    ) -> Result<Written> {
        let output = Arc::new(planned.output_schema());
        let mut batches = planned
            .frame
            .execute_stream()
            .await
            .map_err(|_| self.failed(load_id))?;
        let mut writer = LoadWriter::new(stage, dir.join("transformed"), output.clone(), file_rows)
            .uncompressed(&planned.digests)
            .spawn();
        let (mut written, mut filtered) = (Fingerprint::default(), Fingerprint::default());
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|_| self.failed(load_id))?;
            let split = split(&batch, &output, planned.keeps)?;
            let carried = batch
                .column_by_name(ROW_HASH_COLUMN)
                .and_then(|hashes| hashes.as_primitive_opt::<UInt64Type>());
            match carried {
                // The raw rows' hashes, carried through the plan: summed, not hashed again.
                Some(hashes) => {
                    written.merge(carried_fingerprint(hashes, split.keep.as_ref()));
                    if let Some(keep) = &split.keep {
                        filtered.merge(carried_fingerprint(hashes, Some(&not(keep)?)));
                    }
                }
                None => {
                    if let Some(dropped) = &split.dropped {
                        filtered.merge(batch_fingerprint(dropped, &planned.key)?);
                    }
                    written.merge(batch_fingerprint(&split.kept, &planned.key)?);
                }
            }
            let kept = split.kept;
            if kept.num_rows() == 0 {
                continue;
            }
            // A closed channel: the destination gave up the copy; the files are still written.
            if let Some(feed) = &copy
                && feed.send(kept.clone()).await.is_err()
            {
                copy = None;
            }
            writer.write(kept).await?;
        }
        let (files, _) = writer.finish().await?;
        // What the destination will get: the checksum of the batches as they went to the
        // encoder, the rows as the files' footers hold them. `raw = this + filtered` proves
        // nothing was lost on the way.
        let written = Fingerprint {
            rows: stage.footer_rows(&files).await?,
            checksum: written.checksum,
        };
        Ok(Written {
            key: planned.key,
            schema: output,
            files,
            written,
            filtered: planned.keeps.then_some(filtered),
        })
    }

    /// Checks `raw = transformed + filtered` and gives the load's figures.
    fn check(&self, load_id: &str, raw: Fingerprint, done: Written) -> Result<Transformed> {
        let written = done.written;
        // A SQL file's dropped rows are what it did not return (when it returned no more
        // than it read).
        let filtered = match done.filtered {
            Some(filtered) => filtered,
            None if written.rows <= raw.rows => Fingerprint {
                rows: raw.rows - written.rows,
                checksum: raw.checksum.wrapping_sub(written.checksum),
            },
            None => Fingerprint::default(),
        };
        let mut sum = written;
        sum.merge(filtered);
        if sum != raw {
            return Err(StreamTransformError::Differs {
                stream: self.stream.clone(),
                load_id: load_id.to_string(),
                raw,
                transformed: written,
                filtered,
            }
            .into());
        }
        info!(stream = %self.stream, load_id, rows = written.rows, filtered = filtered.rows, "transformed");
        Ok(Transformed {
            key: done.key,
            schema: columns_of(&done.schema)?,
            files: done.files,
            transformed: written,
            filtered,
        })
    }

    fn failed(&self, load_id: &str) -> StreamTransformError {
        StreamTransformError::Execute {
            stream: self.stream.clone(),
            load_id: load_id.to_string(),
        }
    }

    /// The first `limit` rows the transform makes of a staged raw load, as `merge` would get
    /// them (for `syncline preview`).
    pub async fn preview(
        &self,
        stage: &Stage,
        raw: RawLoad<'_>,
        limit: usize,
    ) -> Result<Vec<RecordBatch>> {
        let ctx = session(limit.clamp(1, 8192));
        let failed = |_| StreamTransformError::Execute {
            stream: self.stream.clone(),
            load_id: raw.load_id.to_string(),
        };
        let frame = read_staged(&ctx, stage, &raw).await.map_err(failed)?;
        let planned = self.plan(&ctx, frame, raw.key).await?;
        let mut frame = planned.frame;
        if planned.keeps {
            frame = frame
                .filter(ident(KEEP_COLUMN))
                .and_then(|f| f.drop_columns(&[KEEP_COLUMN]))
                .map_err(|e| self.plan_error(e))?;
        }
        let batches = frame
            .limit(0, Some(limit))
            .map_err(|e| self.plan_error(e))?
            .collect()
            .await
            .map_err(failed)?;
        Ok(batches)
    }

    fn origin(&self) -> String {
        match &self.settings.sql {
            Some(file) => file.display().to_string(),
            None => format!("[streams.{}]", self.stream),
        }
    }

    fn plan_error(&self, source: DataFusionError) -> Error {
        match missing_field(&source) {
            Some(column) => StreamTransformError::MissingColumn {
                stream: self.stream.clone(),
                origin: self.origin(),
                column,
            }
            .into(),
            None => StreamTransformError::Plan {
                stream: self.stream.clone(),
                origin: self.origin(),
                source,
            }
            .into(),
        }
    }

    async fn plan(&self, ctx: &SessionContext, raw: DataFrame, key: &str) -> Result<Planned> {
        let planned = match &self.sql {
            Some(sql) => self.plan_sql(ctx, raw, key, sql).await?,
            None => self.plan_declarative(raw, key)?,
        };
        self.stageable(planned)
    }

    /// `select`/`exclude` → `rename` → `hash` → `cast` → `column_case`, then the filter over
    /// the output names, as a keep flag (deletes always kept).
    fn plan_declarative(&self, raw: DataFrame, key: &str) -> Result<Planned> {
        let s = &self.settings;
        let stream = &self.stream;
        let origin = |name: &str| format!("`streams.{stream}.{name}`");
        let columns: Vec<String> = raw
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|name| name != ROW_HASH_COLUMN)
            .collect();
        let missing = |name: &str, column: &str| -> Error {
            StreamTransformError::MissingColumn {
                stream: stream.clone(),
                origin: origin(name),
                column: column.to_string(),
            }
            .into()
        };
        let mut kept: Vec<&String> = columns.iter().collect();
        if let Some(select) = &s.select {
            for pattern in select {
                let literal = !pattern.contains(['*', '?', '[', '{']);
                if literal && !columns.contains(pattern) {
                    return Err(missing("select", pattern));
                }
            }
            let matchers = globs(select);
            kept.retain(|c| is_system_column(c) || matchers.iter().any(|m| m.is_match(c.as_str())));
            if !kept.iter().any(|c| *c == key) {
                return Err(StreamTransformError::Drops {
                    stream: stream.clone(),
                    origin: origin("select"),
                    column: key.to_string(),
                }
                .into());
            }
        }
        if !s.exclude.is_empty() {
            for pattern in &s.exclude {
                let literal = !pattern.contains(['*', '?', '[', '{']);
                if literal && !columns.contains(pattern) {
                    return Err(missing("exclude", pattern));
                }
            }
            let matchers = globs(&s.exclude);
            for column in &columns {
                let excluded = matchers.iter().any(|m| m.is_match(column.as_str()));
                if excluded && (column == key || is_system_column(column)) {
                    return Err(StreamTransformError::Drops {
                        stream: stream.clone(),
                        origin: origin("exclude"),
                        column: column.clone(),
                    }
                    .into());
                }
            }
            kept.retain(|c| !matchers.iter().any(|m| m.is_match(c.as_str())));
        }
        for (name, named) in [
            ("rename", s.rename.keys().collect::<Vec<_>>()),
            ("hash", s.hash.iter().collect()),
            ("cast", s.cast.keys().collect()),
        ] {
            for column in named {
                if !columns.contains(column) {
                    return Err(missing(name, column));
                }
                if !kept.contains(&column) {
                    return Err(StreamTransformError::MissingColumn {
                        stream: stream.clone(),
                        origin: format!("{} (after select/exclude)", origin(name)),
                        column: column.clone(),
                    }
                    .into());
                }
                if column == key && name != "rename" {
                    return Err(StreamTransformError::Changes {
                        stream: stream.clone(),
                        origin: origin(name),
                        column: column.clone(),
                    }
                    .into());
                }
            }
        }
        let hash = ScalarUDF::from(SaltedDigest::new());
        let mut exprs = Vec::new();
        let mut names = BTreeSet::new();
        let mut output_key = key.to_string();
        let mut digests = Vec::new();
        for column in kept {
            let mut expr = ident(column);
            let hashed = s.hash.contains(column);
            if hashed {
                expr = hash.call(vec![cast(expr, DataType::Utf8)]);
            }
            if let Some(to) = s.cast.get(column) {
                expr = cast(expr, cast_type(to));
            }
            let name = match s.rename.get(column) {
                Some(to) => to.clone(),
                None => s.column_case.apply(column),
            };
            if !names.insert(name.clone()) {
                return Err(StreamTransformError::DuplicateColumn {
                    stream: stream.clone(),
                    origin: format!("[streams.{stream}]"),
                    column: name,
                }
                .into());
            }
            if column == key {
                output_key = name.clone();
            }
            if hashed && !s.cast.contains_key(column) {
                digests.push(name.clone());
            }
            exprs.push(expr.alias(name));
        }
        if raw
            .schema()
            .has_column_with_unqualified_name(ROW_HASH_COLUMN)
        {
            exprs.push(ident(ROW_HASH_COLUMN));
        }
        let mut frame = raw.select(exprs).map_err(|e| self.plan_error(e))?;
        let keeps = if let Some(filter) = &s.filter {
            let predicate = frame
                .parse_sql_expr(filter)
                .map_err(|e| match missing_field(&e) {
                    Some(column) => missing("filter", &column),
                    None => StreamTransformError::ParseFilter {
                        stream: stream.clone(),
                        source: e,
                    }
                    .into(),
                })?;
            let typed = predicate
                .get_type(frame.schema())
                .map_err(|e| self.plan_error(e))?;
            if !matches!(typed, DataType::Boolean | DataType::Null) {
                return Err(StreamTransformError::FilterNotBoolean {
                    stream: stream.clone(),
                }
                .into());
            }
            let keep = ident(DELETED_COLUMN).or(predicate.is_true());
            frame = frame
                .with_column(KEEP_COLUMN, keep)
                .map_err(|e| self.plan_error(e))?;
            true
        } else {
            false
        };
        Ok(Planned {
            frame,
            key: output_key,
            keeps,
            digests,
        })
    }

    /// The user's SELECT over the live rows (the stream's name is a view of them), and the
    /// deletes beside it carrying only the key, version and delete flag.
    async fn plan_sql(
        &self,
        ctx: &SessionContext,
        raw: DataFrame,
        key: &str,
        sql: &str,
    ) -> Result<Planned> {
        let origin = self.origin();
        let stream = &self.stream;
        let plan = |e| self.plan_error(e);
        ctx.register_table(RAW_TABLE, raw.clone().into_view())
            .map_err(plan)?;
        let live = raw
            .clone()
            .filter(ident(DELETED_COLUMN).is_not_true())
            .map_err(plan)?;
        ctx.register_table(TableReference::from(stream.as_str()), live.into_view())
            .map_err(plan)?;
        let body = sql.trim().trim_end_matches(';');
        let user = ctx.sql(body).await.map_err(plan)?;
        let output_key = output_name_of(user.logical_plan(), key).ok_or_else(|| {
            Error::from(StreamTransformError::Drops {
                stream: stream.clone(),
                origin: origin.clone(),
                column: key.to_string(),
            })
        })?;
        let raw_schema = raw.schema().clone();
        for system in [VERSION_COLUMN, DELETED_COLUMN] {
            let Ok(field) = user.schema().field_with_unqualified_name(system) else {
                return Err(StreamTransformError::Drops {
                    stream: stream.clone(),
                    origin: origin.clone(),
                    column: system.to_string(),
                }
                .into());
            };
            let same = output_name_of(user.logical_plan(), system).as_deref() == Some(system)
                && raw_schema
                    .field_with_unqualified_name(system)
                    .is_ok_and(|raw| raw.data_type() == field.data_type());
            if !same {
                return Err(StreamTransformError::Changes {
                    stream: stream.clone(),
                    origin: origin.clone(),
                    column: system.to_string(),
                }
                .into());
            }
        }
        let key_type = raw_schema
            .field_with_unqualified_name(key)
            .map(|f| f.data_type().clone())
            .map_err(|e| plan(e))?;
        let out_key_type = user
            .schema()
            .field_with_unqualified_name(&output_key)
            .map(|f| f.data_type().clone())
            .map_err(|e| plan(e))?;
        if key_type != out_key_type {
            return Err(StreamTransformError::Changes {
                stream: stream.clone(),
                origin: origin.clone(),
                column: key.to_string(),
            }
            .into());
        }
        let mut tombstone = Vec::new();
        let mut names = BTreeSet::new();
        for field in user.schema().fields() {
            let name = field.name();
            if !names.insert(name.clone()) {
                return Err(StreamTransformError::DuplicateColumn {
                    stream: stream.clone(),
                    origin: origin.clone(),
                    column: name.clone(),
                }
                .into());
            }
            let expr = if *name == output_key {
                ident(key)
            } else if name == VERSION_COLUMN || name == DELETED_COLUMN {
                ident(name)
            } else {
                let null = ScalarValue::try_from(field.data_type()).map_err(plan)?;
                lit(null)
            };
            tombstone.push(expr.alias(name));
        }
        let deletes = raw
            .filter(ident(DELETED_COLUMN).is_true())
            .and_then(|f| f.select(tombstone))
            .map_err(plan)?;
        let frame = user.union(deletes).map_err(plan)?;
        Ok(Planned {
            frame,
            key: output_key,
            keeps: false,
            digests: Vec::new(),
        })
    }

    /// Casts what converts without loss to a stageable type (`Utf8View` to `Utf8`, narrower
    /// integers to `Int64`, ...) and refuses the rest, naming the column.
    fn stageable(&self, planned: Planned) -> Result<Planned> {
        let mut changed = false;
        let mut exprs = Vec::new();
        for field in planned.frame.schema().fields() {
            let name = field.name();
            let column = ident(name);
            if name == ROW_HASH_COLUMN {
                exprs.push(column);
                continue;
            }
            let target = match field.data_type() {
                DataType::Int64
                | DataType::Float64
                | DataType::Utf8
                | DataType::Boolean
                | DataType::Date32 => None,
                DataType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond, Some(tz))
                    if tz.as_ref() == "UTC" =>
                {
                    None
                }
                // A decimal every destination holds (a cast, or a SQL transform's arithmetic)
                // stays exact.
                DataType::Decimal128(precision, scale)
                    if *precision <= MAX_DECIMAL_PRECISION
                        && *scale >= 0
                        && (*scale as u8) <= *precision =>
                {
                    None
                }
                DataType::Utf8View | DataType::LargeUtf8 => Some(DataType::Utf8),
                DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32 => Some(DataType::Int64),
                DataType::Float16 | DataType::Float32 => Some(DataType::Float64),
                DataType::Timestamp(_, _) => Some(timestamp_type()),
                DataType::Date64 => Some(DataType::Date32),
                // A NULL literal column (a tombstone's, or `NULL AS x`): text.
                DataType::Null => Some(DataType::Utf8),
                other => {
                    return Err(StreamTransformError::Unstageable {
                        stream: self.stream.clone(),
                        origin: self.origin(),
                        column: name.clone(),
                        data_type: other.clone(),
                    }
                    .into());
                }
            };
            changed |= target.is_some();
            exprs.push(match target {
                Some(to) => cast(column, to).alias(name),
                None => column,
            });
        }
        if !changed {
            return Ok(planned);
        }
        let frame = planned
            .frame
            .select(exprs)
            .map_err(|e| self.plan_error(e))?;
        Ok(Planned { frame, ..planned })
    }
}

/// A plan and what the pipeline needs to know of it.
struct Planned {
    frame: DataFrame,
    key: String,
    /// The frame has a [`KEEP_COLUMN`]: rows without it are filtered (and counted).
    keeps: bool,
    /// Output columns holding `hash`'s hex digests, staged uncompressed (see
    /// [`LoadWriter::uncompressed`]).
    digests: Vec<String>,
}

impl Planned {
    fn output_schema(&self) -> Schema {
        let fields: Vec<Field> = self
            .frame
            .schema()
            .fields()
            .iter()
            .filter(|f| f.name() != KEEP_COLUMN && f.name() != ROW_HASH_COLUMN)
            .map(|f| f.as_ref().clone())
            .collect();
        Schema::new(fields)
    }
}

/// A column by its exact name (no parsing of dots or case).
fn ident(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

fn globs(patterns: &[String]) -> Vec<globset::GlobMatcher> {
    patterns
        .iter()
        // Validated with the config; a pattern that did not compile matches nothing.
        .filter_map(|p| globset::Glob::new(p).ok().map(|g| g.compile_matcher()))
        .collect()
}

fn cast_type(name: &str) -> DataType {
    // Validated with the config: a decimal names 1..=38 digits and a scale within them.
    if let Some(Ok((precision, scale))) = crate::config::decimal_cast(name) {
        return DataType::Decimal128(precision, scale as i8);
    }
    match name.to_lowercase().as_str() {
        "bigint" | "int64" | "integer" => DataType::Int64,
        "double" | "float64" => DataType::Float64,
        "boolean" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp" => timestamp_type(),
        // text, varchar, string (the config accepts no other names).
        _ => DataType::Utf8,
    }
}

fn session(batch_rows: usize) -> SessionContext {
    let mut config = SessionConfig::new()
        .with_batch_size(batch_rows.max(1))
        .with_target_partitions(1);
    // Staged text is Utf8; DataFusion would otherwise read it as Utf8View.
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    let ctx = SessionContext::new_with_config(config);
    ctx.register_udf(ScalarUDF::from(HashSalt::new()));
    ctx.register_udf(ScalarUDF::from(SaltedDigest::new()));
    ctx
}

/// The raw files of a load as a DataFrame, read through the stage's own object store.
async fn read_staged(
    ctx: &SessionContext,
    stage: &Stage,
    raw: &RawLoad<'_>,
) -> std::result::Result<DataFrame, DataFusionError> {
    let base = url::Url::parse("syncline-stage://stage/").expect("a valid URL");
    ctx.register_object_store(&base, stage.store().clone());
    let urls: Vec<String> = raw
        .files
        .iter()
        .map(|f| format!("syncline-stage://stage/{}", f.path))
        .collect();
    ctx.read_parquet(
        urls,
        ParquetReadOptions::default().schema(raw.schema.as_ref()),
    )
    .await
}

/// The name a column of the input comes out under in the plan's top projection, when it comes
/// out as itself (possibly renamed): `id AS contact_id` gives `contact_id`.
fn output_name_of(plan: &LogicalPlan, column: &str) -> Option<String> {
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Projection(projection) => {
                return projection.expr.iter().find_map(|expr| {
                    let (inner, name) = match expr {
                        Expr::Alias(alias) => (alias.expr.as_ref(), alias.name.clone()),
                        other => (other, other.schema_name().to_string()),
                    };
                    match inner {
                        Expr::Column(c) if c.name == column => {
                            Some(if matches!(expr, Expr::Alias(_)) {
                                name
                            } else {
                                c.name.clone()
                            })
                        }
                        _ => None,
                    }
                });
            }
            // Order, limits and distinct keep the projection's names.
            LogicalPlan::Sort(_) | LogicalPlan::Limit(_) | LogicalPlan::Distinct(_) => {
                node = node.inputs().into_iter().next()?;
            }
            _ => {
                return plan
                    .schema()
                    .field_with_unqualified_name(column)
                    .ok()
                    .map(|f| f.name().clone());
            }
        }
    }
}

/// The column a planning error says is missing.
fn missing_field(err: &DataFusionError) -> Option<String> {
    match err.find_root() {
        DataFusionError::SchemaError(error, _) => match error.as_ref() {
            SchemaError::FieldNotFound { field, .. } => Some(field.name.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn parse_filter(stream: &str, filter: &str) -> Result<()> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let parsed = Parser::new(&GenericDialect {})
        .try_with_sql(filter)
        .and_then(|mut p| {
            let expr = p.parse_expr()?;
            p.expect_token(&datafusion::sql::sqlparser::tokenizer::Token::EOF)?;
            Ok(expr)
        });
    parsed.map(|_| ()).map_err(|e| {
        StreamTransformError::ParseFilter {
            stream: stream.to_string(),
            source: DataFusionError::SQL(Box::new(e), None),
        }
        .into()
    })
}

/// A batch of the plan's output, split by its keep flag into the rows written and the rows the
/// filter dropped.
struct Split {
    kept: RecordBatch,
    /// `None` when the plan has no filter.
    dropped: Option<RecordBatch>,
    /// Which rows of the batch were kept; `None` when all of them were.
    keep: Option<BooleanArray>,
}

/// The output columns of a plan's batch (its internal columns left out), split by its keep
/// flag.
fn split(batch: &RecordBatch, output: &SchemaRef, keeps: bool) -> Result<Split> {
    let columns: Vec<Arc<dyn Array>> = output
        .fields()
        .iter()
        .map(|f| {
            batch.column_by_name(f.name()).cloned().ok_or_else(|| {
                Error::from(crate::reconcile::FingerprintError::MissingColumn(
                    f.name().clone(),
                ))
            })
        })
        .collect::<Result<_>>()?;
    let rows = RecordBatch::try_new(output.clone(), columns)?;
    if !keeps {
        return Ok(Split {
            kept: rows,
            dropped: None,
            keep: None,
        });
    }
    let flag = batch
        .column_by_name(KEEP_COLUMN)
        .and_then(|c| c.as_boolean_opt())
        .cloned()
        .ok_or_else(|| {
            Error::from(crate::reconcile::FingerprintError::MissingColumn(
                KEEP_COLUMN.to_string(),
            ))
        })?;
    // The flag is never NULL (a delete, or the filter IS TRUE), but be exact about it.
    let flag = BooleanArray::from_iter(flag.iter().map(|v| Some(v == Some(true))));
    // The common case, a filter every row of the batch passes: no copy of the batch.
    if flag.true_count() == flag.len() {
        return Ok(Split {
            kept: rows,
            dropped: Some(RecordBatch::new_empty(output.clone())),
            keep: None,
        });
    }
    let kept = filter_record_batch(&rows, &flag)?;
    let dropped = filter_record_batch(&rows, &not(&flag)?)?;
    Ok(Split {
        kept,
        dropped: Some(dropped),
        keep: Some(flag),
    })
}

/// `syncline_hash_salt()`: the salt of `hash`, read from the environment when the plan runs,
/// so the salt is in no plan, log line or error (volatile, so never folded into a literal).
#[derive(Debug, PartialEq, Eq, Hash)]
struct HashSalt {
    signature: Signature,
}

impl HashSalt {
    fn new() -> HashSalt {
        HashSalt {
            signature: Signature::exact(vec![], Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for HashSalt {
    fn name(&self) -> &str {
        "syncline_hash_salt"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let salt = std::env::var(HASH_SALT_VAR).unwrap_or_default();
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(salt))))
    }
}

/// `syncline_hash(text)`: the lowercase hex SHA-256 of the salt followed by `text` (NULL
/// stays NULL), what `encode(sha256(syncline_hash_salt() || text), 'hex')` gives, in one pass
/// that writes each digest's hex straight into the output: no salted copy of the column, no
/// array of binary digests between the hash and its hex.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SaltedDigest {
    signature: Signature,
}

impl SaltedDigest {
    fn new() -> SaltedDigest {
        SaltedDigest {
            // Volatile as the salt is: read from the environment when the plan runs.
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for SaltedDigest {
    fn name(&self) -> &str {
        "syncline_hash"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        use sha2::{Digest, Sha256};
        let salted = Sha256::new_with_prefix(std::env::var(HASH_SALT_VAR).unwrap_or_default());
        fn hex_of<'h>(salted: &Sha256, text: &str, hex: &'h mut [u8; 64]) -> &'h str {
            let digest = salted.clone().chain_update(text).finalize();
            hex::encode_to_slice(digest, hex).expect("64 hex digits hold 32 bytes");
            std::str::from_utf8(hex).expect("hex digits are UTF-8")
        }
        let digest = |text: &str, hex: &mut [u8; 64]| hex_of(&salted, text, hex).to_string();
        let mut hex = [0u8; 64];
        match args.args.as_slice() {
            [ColumnarValue::Scalar(ScalarValue::Utf8(text))] => Ok(ColumnarValue::Scalar(
                ScalarValue::Utf8(text.as_deref().map(|t| digest(t, &mut hex))),
            )),
            [ColumnarValue::Array(texts)] => {
                let texts = texts.as_string::<i32>();
                let mut out = arrow::array::StringBuilder::with_capacity(
                    texts.len(),
                    64 * (texts.len() - texts.null_count()),
                );
                for text in texts {
                    match text {
                        Some(text) => out.append_value(hex_of(&salted, text, &mut hex)),
                        None => out.append_null(),
                    }
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish())))
            }
            other => Err(DataFusionError::Internal(format!(
                "syncline_hash takes one text value, not {}",
                other.len()
            ))),
        }
    }
}

/// Every selected stream's transform read and parsed: what `run` checks before it builds the
/// source, so a bad SQL file or filter stops the run (exit 2) with no source call.
pub fn prepare_all(config: &Config, streams: &[String]) -> Result<()> {
    for stream in streams {
        StreamTransform::prepare(config, stream)?;
    }
    Ok(())
}

/// The stream's transform planned against the columns the source discovers, before any
/// record is read, with what its output will look like; `None` when the stream has no
/// transform.
pub async fn ready(
    config: &Config,
    stream: &str,
    source: &dyn crate::sources::Source,
) -> Result<Option<(StreamTransform, Compiled)>> {
    let Some(transform) = StreamTransform::prepare(config, stream)? else {
        return Ok(None);
    };
    let schema = source.discover(stream).await?;
    // Sources put the key first (`sources` module contract).
    let key = schema.field(0).name().clone();
    let compiled = transform.compile(&schema, &key).await?;
    Ok(Some((transform, compiled)))
}

/// Raw batches sent to a transform ahead of it.
const FEED_AHEAD_BATCHES: usize = 2;

/// Where the staging of a raw load sends its batches for the transform.
pub struct RawFeed {
    batches: tokio::sync::mpsc::Sender<RecordBatch>,
    /// The raw schema with [`ROW_HASH_COLUMN`] added, when the plan carries each row's hash.
    with_row_hashes: Option<SchemaRef>,
}

impl RawFeed {
    /// A staged batch's fingerprint, and the batch as the transform takes it: with its rows'
    /// hashes when the plan carries them, so each row is hashed once.
    pub fn fingerprint(
        &self,
        batch: &RecordBatch,
        key: &str,
    ) -> Result<(Fingerprint, RecordBatch)> {
        match &self.with_row_hashes {
            Some(schema) => {
                let hashes = row_hashes(batch, key)?;
                let fingerprint = carried_fingerprint(&hashes, None);
                let mut columns = batch.columns().to_vec();
                columns.push(Arc::new(hashes));
                Ok((fingerprint, RecordBatch::try_new(schema.clone(), columns)?))
            }
            None => Ok((batch_fingerprint(batch, key)?, batch.clone())),
        }
    }

    /// Sends a batch from [`RawFeed::fingerprint`] to the transform; `false` when the
    /// transform is gone (it failed, and says why when it is finished).
    pub async fn send(&self, batch: RecordBatch) -> bool {
        self.batches.send(batch).await.is_ok()
    }
}

/// Where a transform sends its output for a destination copying it while it is staged.
pub type CopyFeed = tokio::sync::mpsc::Sender<RecordBatch>;

/// What a plan's run wrote, before it is checked against the raw load.
struct Written {
    key: String,
    schema: SchemaRef,
    files: Vec<StagedFile>,
    written: Fingerprint,
    /// Counted as the filter ran; `None` for a SQL transform (the difference, see `check`).
    filtered: Option<Fingerprint>,
}

/// The raw batches of a load as a DataFusion partition: what is sent to the feed, once.
#[derive(Debug)]
struct FedPartition {
    schema: SchemaRef,
    batches: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<RecordBatch>>>,
}

impl PartitionStream for FedPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = self
            .batches
            .lock()
            .expect("the feed's lock is never poisoned")
            .take();
        let stream = futures::stream::unfold(batches, |batches| async move {
            let mut batches = batches?;
            let batch = batches.recv().await?;
            Some((Ok(batch), Some(batches)))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// A transform running beside the staging of its raw load ([`StreamTransform::start`]).
pub struct Running {
    transform: StreamTransform,
    load_id: String,
    task: Option<tokio::task::JoinHandle<Result<Written>>>,
}

impl Running {
    /// Waits for the transform to write the last of the load (its feed must be dropped) and
    /// returns the manifest of what will be merged: the transformed files, key and schema,
    /// with the raw load, staged and proved as `raw`, kept in [`Manifest::transform`]. The
    /// report gets the filtered count and both fingerprints.
    pub async fn finish(
        mut self,
        raw: crate::stage::Manifest,
        report: &mut crate::reconcile::report::StreamReport,
    ) -> Result<crate::stage::Manifest> {
        let task = self.task.take().expect("a transform is finished once");
        let written = match task.await {
            Ok(written) => written?,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        };
        if raw.rows == 0 {
            return Ok(raw);
        }
        let done = self
            .transform
            .check(&self.load_id, raw.fingerprint(), written)?;
        report.rows_filtered = done.filtered.rows;
        report.reconciliation.transformed = Some(done.transformed);
        report.reconciliation.filtered = Some(done.filtered);
        let files = crate::stage::RawLoadFiles {
            key: raw.key.clone(),
            schema: raw.schema.clone(),
            files: raw.files.clone(),
            rows: raw.rows,
            checksum: raw.checksum,
            filtered_rows: done.filtered.rows,
            filtered_checksum: done.filtered.checksum,
        };
        Ok(crate::stage::Manifest {
            key: done.key,
            schema: done.schema,
            files: done.files,
            rows: done.transformed.rows,
            checksum: done.transformed.checksum,
            transform: Some(files),
            ..raw
        })
    }
}

impl Drop for Running {
    /// A load abandoned midway (an error upstream) stops its transform; its files are never
    /// listed in a manifest.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// `syncline preview`: the first `limit` rows the stream's transform, as configured now, makes
/// of the raw copy of its last staged load (deletes included, filtered rows left out).
pub async fn preview(config: &Config, stream: &str, limit: usize) -> Result<Vec<RecordBatch>> {
    let transform = StreamTransform::prepare(config, stream)?.ok_or_else(|| {
        StreamTransformError::NoTransform {
            stream: stream.to_string(),
        }
    })?;
    let stage = Stage::open(&config.staging)?;
    let loads = stage.list_loads(&config.pipeline.name, stream).await?;
    let manifest = loads
        .into_iter()
        .rev()
        .find_map(|load| {
            load.manifest
                .filter(|m| m.rows > 0 || m.transform.is_some())
        })
        .ok_or_else(|| StreamTransformError::NothingStaged {
            stream: stream.to_string(),
        })?;
    let (key, schema, files, fingerprint) = match &manifest.transform {
        Some(raw) => (
            raw.key.as_str(),
            crate::stage::schema_of(&raw.schema)?,
            raw.files.as_slice(),
            manifest.raw_fingerprint(),
        ),
        None => (
            manifest.key.as_str(),
            manifest.arrow_schema()?,
            manifest.files.as_slice(),
            manifest.fingerprint(),
        ),
    };
    transform
        .preview(
            &stage,
            RawLoad {
                load_id: &manifest.load_id,
                key,
                schema,
                files,
                fingerprint,
            },
            limit,
        )
        .await
}
