//! What can go wrong in the lake destination. deltalake, DataFusion, object_store and Arrow
//! failures are kept as the source of the step that failed; they name paths and columns, never
//! storage options, so they carry no secrets.

use std::path::PathBuf;

use datafusion::error::DataFusionError;
use deltalake::DeltaTableError;

use crate::error::{Classified, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("the lake root is not a URL; use file:///abs/path or s3://bucket/prefix")]
    RootNotAUrl(#[source] url::ParseError),
    #[error("the lake destination supports file:// and s3:// roots, not {0}://")]
    UnsupportedScheme(String),
    /// `root` has its password, if any, redacted.
    #[error("the lake root {root} is not a local path (use file:///abs/path)")]
    RootNotALocalPath { root: String },
    #[error("the lake root {} cannot be created", dir.display())]
    RootNotCreatable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lake table name `{table}` {problem}")]
    BadTableName { table: String, problem: String },
    #[error("stream `{stream}`: key column `{key}` must be an integer, a decimal or a string")]
    KeyNotJoinable { stream: String, key: String },
    /// The root existed when the destination was built but cannot be created now.
    #[error("lake: create the root {}", dir.display())]
    CreateRoot {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lake: {step}")]
    Delta {
        step: &'static str,
        #[source]
        source: DeltaTableError,
    },
    #[error("lake: {step}")]
    DataFusion {
        step: &'static str,
        #[source]
        source: DataFusionError,
    },
    #[error("lake: {step}")]
    Store {
        step: &'static str,
        #[source]
        source: object_store::Error,
    },
    #[error("lake: {step}")]
    Arrow {
        step: &'static str,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("lake: {step}")]
    Parquet {
        step: &'static str,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The local folder a load is spooled to before the merge scans it (under `TMPDIR`).
    #[error("lake: {step} in {}", dir.display())]
    Spool {
        step: &'static str,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lake: table `{table}` does not exist; run ensure_table before merging")]
    NoTable { table: String },
    #[error("lake: fingerprint the table: the version column is not a timestamp")]
    VersionNotATimestamp,
    #[error("lake: a staged batch has column `{column}`, which the load's schema lacks")]
    UnexpectedColumn { column: String },
    #[error("lake: a staged batch lacks column `{column}` of the load's schema")]
    MissingColumn { column: String },
    #[error("lake: count soft deletes: negative count {0}")]
    NegativeCount(i64),
    #[error("lake: merge by rewriting the table's files: {0}")]
    Rewrite(&'static str),
    #[error("lake: the commit of load {load_id} in table `{table}` has no valid {what}")]
    MalformedCommit {
        load_id: String,
        table: String,
        what: &'static str,
    },
}

impl Classified for LakeError {
    fn kind(&self) -> ErrorKind {
        match self {
            LakeError::RootNotAUrl(_)
            | LakeError::UnsupportedScheme(_)
            | LakeError::RootNotALocalPath { .. }
            | LakeError::RootNotCreatable { .. }
            | LakeError::BadTableName { .. }
            | LakeError::KeyNotJoinable { .. } => ErrorKind::Config,
            LakeError::CreateRoot { .. }
            | LakeError::Delta { .. }
            | LakeError::DataFusion { .. }
            | LakeError::Store { .. }
            | LakeError::Arrow { .. }
            | LakeError::Parquet { .. }
            | LakeError::Spool { .. }
            | LakeError::NoTable { .. }
            | LakeError::VersionNotATimestamp
            | LakeError::UnexpectedColumn { .. }
            | LakeError::MissingColumn { .. }
            | LakeError::NegativeCount(_)
            | LakeError::Rewrite(_)
            | LakeError::MalformedCommit { .. } => ErrorKind::Destination,
        }
    }
}

/// A library failure that names the lake step it failed in (see `StepExt`).
pub(super) trait StepFailure {
    fn at(self, step: &'static str) -> LakeError;
}

impl StepFailure for DeltaTableError {
    fn at(self, step: &'static str) -> LakeError {
        LakeError::Delta { step, source: self }
    }
}

impl StepFailure for DataFusionError {
    fn at(self, step: &'static str) -> LakeError {
        LakeError::DataFusion { step, source: self }
    }
}

impl StepFailure for object_store::Error {
    fn at(self, step: &'static str) -> LakeError {
        LakeError::Store { step, source: self }
    }
}

impl StepFailure for arrow::error::ArrowError {
    fn at(self, step: &'static str) -> LakeError {
        LakeError::Arrow { step, source: self }
    }
}

impl StepFailure for parquet::errors::ParquetError {
    fn at(self, step: &'static str) -> LakeError {
        LakeError::Parquet { step, source: self }
    }
}

/// Names the failed step on deltalake, DataFusion, object_store, Arrow and Parquet results:
/// `.step("create the table")?`.
pub(super) trait StepExt<T> {
    fn step(self, step: &'static str) -> Result<T, LakeError>;
}

impl<T, E: StepFailure> StepExt<T> for Result<T, E> {
    fn step(self, step: &'static str) -> Result<T, LakeError> {
        self.map_err(|err| err.at(step))
    }
}
