//! What can go wrong reading files, each failure with its kind.

use arrow::error::ArrowError;

use crate::config::KeyError;
use crate::error::{Classified, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("`source.url` is not a URL")]
    NotAUrl(#[source] url::ParseError),
    #[error("`source.url` {0} is not a local path")]
    NotALocalPath(String),
    #[error("`source.url` {0}: no such folder")]
    NoSuchFolder(String),
    /// A configured stream names no files: the files source's form of a missing stream.
    #[error("stream {0} has no [source.files.{0}] table")]
    NoSuchStream(String),
    #[error("`source.files.{stream}.glob` is not a valid glob")]
    BadGlob {
        stream: String,
        #[source]
        source: globset::Error,
    },
    /// A setting of the stream's table that the files' columns contradict.
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(
        "`source.files.{stream}.schema` is not declared and no file matching glob {glob:?} has records to infer it from; declare the columns or add a file"
    )]
    NothingToInfer { stream: String, glob: String },
    #[error("cannot list {url}")]
    List {
        url: String,
        #[source]
        source: object_store::Error,
    },
    /// The blocking task inferring the schema panicked or was aborted.
    #[error("schema inference stopped")]
    InferenceStopped(#[source] tokio::task::JoinError),
    /// The blocking task computing a file's content checksum panicked or was aborted.
    #[error("computing the content checksum of a file stopped")]
    ChecksumStopped(#[source] tokio::task::JoinError),
    #[error("inferring the schema from {file}")]
    Infer {
        file: String,
        #[source]
        source: ReadError,
    },
    #[error("reading {file}")]
    Read {
        file: String,
        #[source]
        source: ReadError,
    },
    #[error("{file}: the header has no key column {key:?} (columns: {columns})")]
    NoKeyColumn {
        file: String,
        key: String,
        columns: String,
    },
    #[error(
        "the saved state of stream {stream} is not a file list; run it once with --full-refresh"
    )]
    BadState {
        stream: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("building a batch")]
    Batch(#[source] ArrowError),
    /// Keeping each key's newest row and sorting the keys for `syncline reconcile` failed.
    #[error("sorting the current records by key")]
    Listing {
        #[source]
        source: datafusion::error::DataFusionError,
    },
}

/// Why a file's bytes could not be read; the cause of [`FilesError::Read`] and
/// [`FilesError::Infer`], which name the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Csv(#[from] csv::Error),
}

impl Classified for FilesError {
    fn kind(&self) -> ErrorKind {
        match self {
            FilesError::NotAUrl(_)
            | FilesError::NotALocalPath(_)
            | FilesError::NoSuchFolder(_)
            | FilesError::NoSuchStream(_)
            | FilesError::BadGlob { .. }
            | FilesError::Key(_)
            | FilesError::NothingToInfer { .. } => ErrorKind::Config,
            FilesError::List { .. }
            | FilesError::InferenceStopped(_)
            | FilesError::ChecksumStopped(_)
            | FilesError::Infer { .. }
            | FilesError::Read { .. }
            | FilesError::NoKeyColumn { .. }
            | FilesError::BadState { .. }
            | FilesError::Batch(_)
            | FilesError::Listing { .. } => ErrorKind::Source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn a_read_failure_names_the_file_and_keeps_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let err = Error::from(FilesError::Read {
            file: "contacts/a.csv".into(),
            source: ReadError::Io(io),
        });
        assert_eq!(err.kind(), ErrorKind::Source);
        assert_eq!(
            err.report(),
            "source error: reading contacts/a.csv: permission denied"
        );
    }

    #[test]
    fn a_stream_without_files_settings_is_a_configuration_error() {
        let err = Error::from(FilesError::NoSuchStream("contacts".into()));
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(
            err.to_string(),
            "configuration error: stream contacts has no [source.files.contacts] table"
        );
    }
}
