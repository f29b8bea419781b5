//! What can go wrong reading PostgreSQL, each failure with its kind.

use pg_walstream::ReplicationError;

use crate::error::{Classified, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum PostgresSourceError {
    /// The server refused a statement. Message and SQLSTATE only, and no cause kept: the
    /// server's DETAIL can quote row values.
    #[error("postgres source: {what}: {message} (SQLSTATE {sqlstate})")]
    Query {
        what: &'static str,
        message: String,
        sqlstate: String,
    },
    /// A statement failed without a server answer (the connection broke).
    #[error("postgres source: {what}")]
    Driver {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "stream `{stream}`: table {schema}.{table} does not exist or has no columns the source user can see; set `[source.tables.{stream}] table` or grant SELECT"
    )]
    NoSuchTable {
        stream: String,
        schema: String,
        table: String,
    },
    #[error(
        "stream `{stream}`: `[source.tables.{stream}] {setting}` names column `{column}`, which table {schema}.{table} does not have"
    )]
    NoSuchColumn {
        stream: String,
        setting: &'static str,
        column: String,
        schema: String,
        table: String,
    },
    #[error(
        "stream `{stream}`: table {schema}.{table} has no primary key; set `[source.tables.{stream}] key` to a unique column"
    )]
    NoPrimaryKey {
        stream: String,
        schema: String,
        table: String,
    },
    #[error(
        "stream `{stream}`: table {schema}.{table} has a composite primary key; set `[source.tables.{stream}] key` to one unique column"
    )]
    CompositeKey {
        stream: String,
        schema: String,
        table: String,
    },
    #[error(
        "stream `{stream}`: key column `{column}` is {sql_type}; the key must be an integer or text-like column"
    )]
    KeyType {
        stream: String,
        column: String,
        sql_type: String,
    },
    #[error(
        "stream `{stream}`: column `{column}` uses the reserved prefix `_syncline_`; list the other columns in `[source.tables.{stream}] columns`"
    )]
    ReservedColumn { stream: String, column: String },
    #[error(
        "stream `{stream}`: cursor_column `{column}` is {sql_type}; use a timestamp, timestamptz or integer column"
    )]
    CursorType {
        stream: String,
        column: String,
        sql_type: String,
    },
    #[error(
        "postgres source: the server runs with wal_level = {0}, but mode = \"cdc\" needs logical replication: set wal_level = logical in postgresql.conf and restart the server, or use mode = \"cursor\""
    )]
    WalLevel(String),
    #[error(
        "postgres source: the source user lacks the REPLICATION attribute that mode = \"cdc\" needs: ALTER ROLE ... WITH REPLICATION, or use mode = \"cursor\""
    )]
    NoReplicationAttribute,
    /// Another connection holds the slot; it may let go, so the run can be retried.
    #[error(
        "postgres source: replication slot {0} is in use by another connection (is another syncline run or a subscriber using it?)"
    )]
    SlotInUse(String),
    #[error(
        "postgres source: the replication connection for slot {slot} said nothing for {seconds}s and its walsender let go of the slot; reading again from the saved cursor"
    )]
    Silent { slot: String, seconds: u64 },
    #[error(
        "postgres source: replication slot {slot} is missing or lost (its WAL was removed), so the changes after LSN {since} cannot be read; run `syncline run --full-refresh --streams STREAM` to take a new snapshot"
    )]
    SlotLost { slot: String, since: String },
    /// Without a replica identity a delete carries no key: it could never reach the
    /// destination, and PostgreSQL refuses deletes on such a table once a publication
    /// covers it.
    #[error(
        "postgres source: table {table} of stream {stream} has no replica identity (REPLICA IDENTITY NOTHING, or DEFAULT without a primary key), so its deletes carry no key; run `ALTER TABLE {table} REPLICA IDENTITY FULL` (or give it a primary key), or use mode = \"cursor\""
    )]
    NoReplicaIdentity { table: String, stream: String },
    /// The publication covers other tables than the stream's (its `table` changed in the
    /// config, or someone altered the publication): streaming would read the wrong changes.
    #[error(
        "postgres source: publication {publication} covers [{covered}], but stream {stream} reads {table}; a full load repairs the publication and takes a new snapshot: run `syncline run --full-refresh --streams {stream}`"
    )]
    PublicationMismatch {
        publication: String,
        covered: String,
        table: String,
        stream: String,
    },
    #[error(
        "postgres source: replication slot {slot} is at LSN {at}, past the saved cursor {saved}: something else consumed it, so changes in between may be missing; run `syncline run --full-refresh --streams {stream}` to take a new snapshot"
    )]
    SlotAhead {
        slot: String,
        at: String,
        saved: String,
        stream: String,
    },
    #[error("postgres source: unreadable LSN {0}")]
    UnreadableLsn(String),
    #[error("postgres replication: {what}")]
    Replication {
        what: &'static str,
        #[source]
        source: ReplicationError,
    },
    #[error("postgres replication: slot {0} was created without an exported snapshot")]
    NoSnapshot(String),
    #[error("postgres replication: slot {0} has no confirmed position after creation")]
    NoConfirmedPosition(String),
    #[error(
        "postgres replication: a change of {schema}.{table} carries no value for key column `{key}`; the key must be the primary key or the table needs REPLICA IDENTITY FULL"
    )]
    NoKeyValue {
        schema: String,
        table: String,
        key: String,
    },
    #[error("postgres replication: a change of {schema}.{table} has a NULL key `{key}`")]
    NullKey {
        schema: String,
        table: String,
        key: String,
    },
    /// A value that cannot become its column's staged type; `why` never quotes the value.
    #[error("postgres {reading}: table {schema}.{table}, column `{column}`: {why}")]
    BadValue {
        /// "source" for snapshot and cursor reads, "replication" for changes.
        reading: &'static str,
        schema: String,
        table: String,
        column: String,
        why: &'static str,
    },
    #[error("building a batch")]
    Batch(#[source] arrow::error::ArrowError),
}

impl Classified for PostgresSourceError {
    fn kind(&self) -> ErrorKind {
        use PostgresSourceError::*;
        match self {
            NoSuchTable { .. }
            | NoSuchColumn { .. }
            | NoPrimaryKey { .. }
            | CompositeKey { .. }
            | KeyType { .. }
            | ReservedColumn { .. }
            | CursorType { .. }
            | WalLevel(_)
            | NoReplicationAttribute
            | PublicationMismatch { .. }
            | NoReplicaIdentity { .. } => ErrorKind::Config,
            Driver { .. } | SlotInUse(_) | Silent { .. } => ErrorKind::Transient,
            Query { .. }
            | SlotLost { .. }
            | SlotAhead { .. }
            | UnreadableLsn(_)
            | Replication { .. }
            | NoSnapshot(_)
            | NoConfirmedPosition(_)
            | NoKeyValue { .. }
            | NullKey { .. }
            | BadValue { .. }
            | Batch(_) => ErrorKind::Source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn kinds_follow_whose_mistake_it_is() {
        let missing = Error::from(PostgresSourceError::NoSuchTable {
            stream: "contacts".into(),
            schema: "public".into(),
            table: "contacts".into(),
        });
        assert_eq!(missing.kind(), ErrorKind::Config, "{missing}");
        let lost = Error::from(PostgresSourceError::SlotLost {
            slot: "s".into(),
            since: "0/10".into(),
        });
        assert_eq!(lost.kind(), ErrorKind::Source, "{lost}");
        assert!(
            lost.to_string().contains("--full-refresh --streams"),
            "{lost}"
        );
        let busy = Error::from(PostgresSourceError::SlotInUse("s".into()));
        assert!(busy.is_transient(), "{busy}");
    }
}
