//! The Snowflake destination: Snowflake reads the Parquet syncline already staged through an
//! external stage (`COPY INTO` a transient table), then one `MERGE` applies the load and the
//! ledger row `"<schema>"."_syncline_loads"` is inserted in the same transaction.
//!
//! Flow of one load: ledger lookup (skip when committed) → `CREATE OR REPLACE STAGE` on the
//! load's folder and `CREATE OR REPLACE TRANSIENT TABLE` (DDL, outside the transaction) →
//! `BEGIN` → `COPY INTO` exactly the manifest's files → rows loaded and the received count and
//! checksum compared with the manifest (a difference rolls back: a reconciliation mismatch) →
//! ledger lookup again → `MERGE` (each key's tombstone joined in) → the deletes remembered
//! (hard: tombstones merged into `"<schema>"."_syncline_tombstones"`; soft: rows marked deleted
//! for keys the table lacks, then counted) → ledger insert → `COMMIT`.
//!
//! Sessions run with `AUTOCOMMIT = FALSE` and an explicit `BEGIN`/`COMMIT` around each load.
//! With Snowflake that is the same as autocommit plus `BEGIN`; the emulator the tests use
//! (fakesnow) needs it because it runs a `MERGE` as several DuckDB statements and cannot do so
//! inside a transaction opened under autocommit. Snowflake does not enforce the ledger's
//! primary key, so two runs merging one load at once are kept apart by the stream's run lock,
//! and the second ledger lookup inside the transaction narrows the window further.
//!
//! A session that expired is replaced by a new one and the operation retried once; a merge is
//! retried from its first step, which is safe because nothing of it committed.

pub mod config;
mod error;
mod sql;
pub(super) mod types;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use sf::{CellValue, DynamicRow};
use snowflake_connector_rs as sf;
use tokio::sync::Mutex;
use tracing::{debug, info, instrument, warn};

use crate::config::{SnowflakeAuth, SnowflakeConfig};
use crate::destinations::layout::ColumnType;
use crate::destinations::{
    ContractError, Destination, LedgerEntry, MergeOutcome, MergeRequest, MergeTimings,
};
use crate::error::Classified;
use crate::load::{DeleteMode, SchemaChange};
use crate::reconcile::Fingerprint;
use crate::reconcile::drift::{Compare, DriftError, Key, ListRequest, Listed, Listing};
use crate::reconcile::report::millis;
use crate::{Error, Result};

pub use error::{ConnectorError, SnowflakeError};
use sql::{LedgerRow, MergeSql, MergeTarget};
use types::{ExistingType, TableLayout};

pub use sql::quote_ident;

/// Keys per page of a reconcile listing.
const LIST_PAGE: usize = 10_000;

/// Snowflake's error code for "Object does not exist or not authorized".
const OBJECT_MISSING: &str = "002003";

/// A Snowflake schema used as a destination: stream tables, the ledger, and syncline's stages
/// and transient tables live in it.
///
/// One session, used by one operation at a time: a merge holds it for its whole transaction.
pub struct SnowflakeDestination {
    client: sf::Client,
    session: Mutex<Option<Arc<sf::Session>>>,
    schema: String,
    staging_url: String,
    stage_url: String,
    storage_integration: Option<String>,
}

impl std::fmt::Debug for SnowflakeDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnowflakeDestination")
            .field("schema", &self.schema)
            .field("stage_url", &self.stage_url)
            .finish_non_exhaustive()
    }
}

impl SnowflakeDestination {
    /// Builds the client from the configuration; the first session is opened by the first
    /// operation. `staging_url` is `staging.url`: loads are read from there, or from
    /// `stage_url` when Snowflake sees the staged objects under another URL.
    ///
    /// An unreadable private key file or an invalid endpoint is a configuration error.
    pub fn new(config: &SnowflakeConfig, staging_url: &str) -> Result<Self> {
        let auth = match config.auth().map_err(SnowflakeError::Credentials)? {
            SnowflakeAuth::Password(password) => sf::AuthConfig::password(password.expose()),
            SnowflakeAuth::KeyPem(pem) => key_pair(config, pem.expose().to_string()),
            SnowflakeAuth::KeyFile(path) => {
                let pem =
                    std::fs::read_to_string(path).map_err(|source| SnowflakeError::KeyFile {
                        path: path.to_owned(),
                        source,
                    })?;
                key_pair(config, pem)
            }
        };
        if let Some(problem) = types::ident_problem(&config.schema) {
            return Err(SnowflakeError::BadSchemaName {
                schema: config.schema.clone(),
                problem,
            }
            .into());
        }
        let timeout = Duration::from_secs(config.statement_timeout_seconds);
        let mut session = sf::SessionConfig::new()
            .with_database(&config.database)
            // Explicit transactions only (see the module docs). Every login carries session
            // parameters this way, which the emulator also insists on.
            .with_session_parameter("AUTOCOMMIT", serde_json::Value::Bool(false))
            .with_session_parameter(
                "STATEMENT_TIMEOUT_IN_SECONDS",
                serde_json::Value::from(config.statement_timeout_seconds),
            )
            .with_session_parameter("TIMEZONE", serde_json::Value::from("UTC"));
        if let Some(role) = &config.role {
            session = session.with_role(role);
        }
        if let Some(warehouse) = &config.warehouse {
            session = session.with_warehouse(warehouse);
        }
        // The client waits a little longer than the server lets a statement run, so the
        // server's timeout error (which names the statement) is what the user sees.
        let query =
            sf::QueryConfig::new().with_query_response_timeout(timeout + Duration::from_secs(60));
        let mut client_config = sf::ClientConfig::new(&config.user, &config.account, auth)
            .with_session(session)
            .with_query(query);
        if let Some(url) = &config.url {
            let url = url::Url::parse(url).map_err(|source| SnowflakeError::NotAUrl {
                key: "destination.url",
                source,
            })?;
            client_config = client_config.with_endpoint(sf::EndpointConfig::custom_base_url(url));
        }
        let client = sf::Client::new(client_config)
            .map_err(|e| SnowflakeError::Client(ConnectorError::new(e)))?;
        Ok(SnowflakeDestination {
            client,
            session: Mutex::new(None),
            schema: config.schema.clone(),
            staging_url: staging_url.to_string(),
            stage_url: config
                .stage_url
                .clone()
                .unwrap_or_else(|| staging_url.to_string()),
            storage_integration: config.storage_integration.clone(),
        })
    }

    /// Runs `operation` on the session (opened when there is none). When Snowflake says the
    /// session expired, opens a new one and runs `operation` once more from its start.
    async fn with_session<T, F, Fut>(&self, operation: F) -> Result<T>
    where
        F: Fn(Arc<sf::Session>) -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let mut slot = self.session.lock().await;
        for attempt in 0..2 {
            let session = match slot.as_ref() {
                Some(session) => session.clone(),
                None => {
                    let session = Arc::new(
                        self.client
                            .create_session()
                            .await
                            .map_err(|e| sf_error("open a session", e))?,
                    );
                    *slot = Some(session.clone());
                    session
                }
            };
            match operation(session).await {
                Err(failure) if failure.session_expired() && attempt == 0 => {
                    warn!("snowflake session expired; opening a new one and retrying");
                    *slot = None;
                }
                result => return result.map_err(Failure::into_error),
            }
        }
        unreachable!("the second attempt returns")
    }

    async fn ensure_schema_and_ledger(&self, session: &sf::Session) -> Outcome<()> {
        set_up(
            session,
            "create the schema",
            sql::create_schema(&self.schema),
        )
        .await?;
        set_up(
            session,
            "create the ledger table",
            sql::create_ledger(&self.schema),
        )
        .await?;
        set_up(
            session,
            "create the tombstone table",
            sql::create_tombstones(&self.schema),
        )
        .await?;
        Ok(())
    }

    async fn ensure_table_once(
        &self,
        session: &sf::Session,
        layout: &TableLayout,
    ) -> Outcome<SchemaChange> {
        self.ensure_schema_and_ledger(session).await?;
        let wanted = layout.target_columns();
        let rows = run(
            session,
            "read the table's columns",
            sql::table_columns(&self.schema, &layout.table),
        )
        .await?;
        if rows.is_empty() {
            run(
                session,
                "create the table",
                sql::create_table(&self.schema, layout, &wanted),
            )
            .await?;
            info!(columns = wanted.len(), "created table");
            return Ok(SchemaChange {
                created_table: true,
                added_columns: Vec::new(),
            });
        }
        let existing = existing_columns(&rows)?;
        let mut added_columns = Vec::new();
        // Snowflake types never widen (see `SfType::fit`): a table only ever gains columns.
        for column in layout.alterations(&existing)?.add {
            run(
                session,
                "add a column",
                sql::add_column(&self.schema, &layout.table, &column),
            )
            .await?;
            info!(column = %column.name, sf_type = %column.ty.name(), "added column");
            added_columns.push(column.name);
        }
        Ok(SchemaChange {
            created_table: false,
            added_columns,
        })
    }

    async fn merge_once(
        &self,
        session: &sf::Session,
        request: &MergeRequest,
        layout: &TableLayout,
    ) -> Outcome<MergeOutcome> {
        let (stage_url, files) =
            sql::stage_location(&self.staging_url, &self.stage_url, &request.files)?;
        // A staged decimal the table holds as text is merged as its text
        // (`TableLayout::adopt`); only a load with a decimal needs to look.
        let mut layout = layout.clone();
        if layout.has_decimals() {
            let rows = run(
                session,
                "read the table's columns",
                sql::table_columns(&self.schema, &layout.table),
            )
            .await?;
            layout.adopt(&existing_columns(&rows)?);
        }
        let layout = &layout;
        let statements = MergeSql::new(
            MergeTarget {
                schema: &self.schema,
                load_id: &request.load_id,
                stage_url: &stage_url,
                files: &files,
                storage_integration: self.storage_integration.as_deref(),
            },
            layout,
        );

        let committed = run(
            session,
            "look up the load in the ledger",
            &statements.ledger_lookup,
        )
        .await
        .map_err(|failure| failure.ledger_missing(&self.schema))?;
        if !committed.is_empty() {
            info!("load already in the ledger; skipped");
            return Ok(MergeOutcome {
                skipped: true,
                ..MergeOutcome::default()
            });
        }

        run(session, "create the stage", &statements.create_stage).await?;
        run(
            session,
            "create the transient table",
            &statements.create_incoming,
        )
        .await?;
        run(session, "begin the merge", &statements.begin).await?;
        let applied = self
            .apply_in_transaction(session, request, &statements)
            .await;
        if applied.is_err() {
            // Best effort: a failed statement may already have ended the transaction, and a
            // session that died takes its transaction with it.
            if let Err(failure) = run(session, "roll back", &statements.rollback).await {
                warn!(error = %failure.describe(), "rollback after a failed merge failed");
            }
        }
        let outcome = applied?;
        if let Err(failure) = run(
            session,
            "drop the transient table",
            &statements.drop_incoming,
        )
        .await
        {
            warn!(error = %failure.describe(), "could not drop the transient table; the next load replaces it");
        }
        Ok(outcome)
    }

    /// Everything between `BEGIN` and `COMMIT`; the caller rolls back on error.
    async fn apply_in_transaction(
        &self,
        session: &sf::Session,
        request: &MergeRequest,
        statements: &MergeSql,
    ) -> Outcome<MergeOutcome> {
        let copying = Instant::now();
        let copied = run(
            session,
            "copy the staged files into the transient table",
            &statements.copy_incoming,
        )
        .await?;
        let mut loaded = 0u64;
        for row in &copied {
            let status = text(row, "status")?;
            if status != "LOADED" {
                return Err(SnowflakeError::FileNotLoaded {
                    load_id: request.load_id.clone(),
                    file: text(row, "file")?,
                    status,
                }
                .into());
            }
            loaded += count(row, "rows_loaded")?;
        }
        if loaded != request.staged.rows {
            return Err(SnowflakeError::CopyCount {
                load_id: request.load_id.clone(),
                loaded,
                files: copied.len(),
                staged_rows: request.staged.rows,
            }
            .into());
        }
        debug!(rows = loaded, "copied staged rows");

        let row = first_row(
            run(
                session,
                "fingerprint the staged rows",
                &statements.staged_fingerprint,
            )
            .await?,
            "fingerprint the staged rows",
        )?;
        let received = fingerprint_of(&row)?;
        if received != request.staged {
            return Err(ContractError::ReceivedDiffers {
                destination: "snowflake",
                load_id: request.load_id.clone(),
                received,
                staged: request.staged,
            }
            .into());
        }

        let committed = run(
            session,
            "look up the load in the ledger",
            &statements.ledger_lookup,
        )
        .await?;
        if !committed.is_empty() {
            return Err(ContractError::CommittedMeanwhile {
                load_id: request.load_id.clone(),
            }
            .into());
        }

        let merged = first_row(run(session, "merge", &statements.merge).await?, "merge")?;
        let inserted = optional_count(&merged, "number of rows inserted")?.unwrap_or(0);
        let mut updated = optional_count(&merged, "number of rows updated")?.unwrap_or(0);
        let mut deleted = optional_count(&merged, "number of rows deleted")?.unwrap_or(0);
        // A delete of a key the table lacks is remembered (soft: a row marked deleted, counted
        // as a delete; hard: the tombstone every delete records, which removes no row).
        let mut remembered = 0;
        if let Some(insert_deleted) = &statements.insert_deleted {
            let row = first_row(
                run(
                    session,
                    "remember deletes of keys the table lacks",
                    insert_deleted,
                )
                .await?,
                "remember deletes of keys the table lacks",
            )?;
            remembered = optional_count(&row, "number of rows inserted")?.unwrap_or(0);
        }
        if let Some(record_tombstones) = &statements.record_tombstones {
            run(session, "record tombstones", record_tombstones).await?;
        }
        if let Some(count_sql) = &statements.soft_deleted_count {
            // MERGE counts a soft delete as an update; the rows this load marked deleted,
            // less those it inserted already deleted, say which of them were deletes.
            let row = first_row(
                run(session, "count soft deletes", count_sql).await?,
                "count soft deletes",
            )?;
            deleted = count(&row, "deleted")?;
            let soft_deleted = deleted.saturating_sub(remembered);
            updated = updated.checked_sub(soft_deleted).ok_or_else(|| {
                SnowflakeError::SoftDeletesExceedUpdates {
                    load_id: request.load_id.clone(),
                    updated,
                    deleted: soft_deleted,
                }
            })?;
        }

        if let Some(orphans) = &statements.orphans {
            if let Some(tombstones) = &orphans.tombstones {
                run(session, "record the orphans' tombstones", tombstones).await?;
            }
            let step = "delete the rows the source no longer has";
            let row = first_row(run(session, step, &orphans.delete).await?, step)?;
            let column = match request.deletes {
                DeleteMode::Hard => "number of rows deleted",
                DeleteMode::Soft => "number of rows updated",
            };
            let orphans = optional_count(&row, column)?.unwrap_or(0);
            if orphans > 0 {
                info!(
                    rows = orphans,
                    "deleted rows the full load no longer carries"
                );
            }
            deleted += orphans;
        }

        run(
            session,
            "record the load in the ledger",
            sql::ledger_insert(
                &self.schema,
                LedgerRow {
                    load_id: &request.load_id,
                    stream: &request.stream,
                    rows: received.rows,
                    checksum: received.checksum,
                    inserted,
                    updated,
                    deleted,
                },
            ),
        )
        .await?;
        let merge_ms = millis(copying.elapsed());
        let committing = Instant::now();
        run(session, "commit the merge", &statements.commit).await?;
        // COPY INTO and MERGE run in one transaction; they are counted as the merge.
        let timings = MergeTimings {
            load_ms: 0,
            merge_ms,
            commit_ms: millis(committing.elapsed()),
            ..MergeTimings::default()
        };
        info!(
            rows = received.rows,
            inserted, updated, deleted, "merged load"
        );
        Ok(MergeOutcome {
            skipped: false,
            inserted,
            updated,
            deleted,
            received,
            timings,
        })
    }
}

/// `(name, type)` of each row of `sql/snowflake/table_columns.sql`.
fn existing_columns(rows: &[DynamicRow]) -> Result<Vec<(String, ExistingType)>> {
    rows.iter()
        .map(|row| {
            let existing = ExistingType {
                data_type: text(row, "data_type")?,
                scale: optional_count(row, "scale")?,
                precision: optional_count(row, "precision")?,
            };
            Ok((text(row, "name")?, existing))
        })
        .collect()
}

fn key_pair(config: &SnowflakeConfig, pem: String) -> sf::AuthConfig {
    let key = match &config.private_key_passphrase {
        Some(passphrase) => {
            sf::KeyPairConfig::from_encrypted_pem(pem, passphrase.expose().as_bytes().to_vec())
        }
        None => sf::KeyPairConfig::from_pem(pem),
    };
    sf::AuthConfig::key_pair(key)
}

#[async_trait]
impl Destination for SnowflakeDestination {
    /// Creates the schema (when missing) and the ledger table.
    async fn check(&self) -> Result<()> {
        self.with_session(|session| async move { self.ensure_schema_and_ledger(&session).await })
            .await
    }

    /// Creates the table (and schema and ledger) when missing; otherwise adds the columns it
    /// lacks. A column whose type cannot take the staged values is schema drift and
    /// changes nothing. (DDL commits on its own in Snowflake: columns added before a failure
    /// stay, which is harmless, since they are added again the next time anyway.)
    #[instrument(skip_all, fields(stream = %request.stream, table = %request.table))]
    async fn ensure_table(&self, request: &MergeRequest) -> Result<SchemaChange> {
        let layout = TableLayout::from_request(request)?;
        self.with_session(|session| {
            let layout = &layout;
            async move { self.ensure_table_once(&session, layout).await }
        })
        .await
    }

    /// Applies one load (see the `destinations` module contract and this module's flow). The
    /// batches are not read: Snowflake reads the staged Parquet files named in the request.
    #[instrument(skip_all, fields(stream = %request.stream, load_id = %request.load_id))]
    async fn merge(
        &self,
        request: &MergeRequest,
        _batches: BoxStream<'static, Result<RecordBatch>>,
    ) -> Result<MergeOutcome> {
        let layout = TableLayout::from_request(request)?;
        if request.files.is_empty() {
            return Err(SnowflakeError::NoFilesInRequest {
                load_id: request.load_id.clone(),
            }
            .into());
        }
        self.with_session(|session| {
            let layout = &layout;
            async move { self.merge_once(&session, request, layout).await }
        })
        .await
    }

    /// `Ok(false)` also when the ledger (or schema) does not exist yet.
    async fn is_committed(&self, _stream: &str, load_id: &str) -> Result<bool> {
        let statement = sql::ledger_lookup(&self.schema, load_id);
        self.with_session(|session| {
            let statement = statement.clone();
            async move {
                match run(&session, "look up the load in the ledger", statement).await {
                    Ok(rows) => Ok(!rows.is_empty()),
                    Err(failure) if failure.object_missing() => Ok(false),
                    Err(failure) => Err(failure),
                }
            }
        })
        .await
    }

    async fn table_fingerprint(
        &self,
        table: &str,
        key: &str,
        deletes: DeleteMode,
    ) -> Result<Option<Fingerprint>> {
        let statement = sql::table_fingerprint(&self.schema, table, key, deletes);
        self.with_session(|session| {
            let statement = statement.clone();
            async move {
                match run(&session, "fingerprint the table", statement).await {
                    Ok(rows) => Ok(Some(fingerprint_of(&first_row(
                        rows,
                        "fingerprint the table",
                    )?)?)),
                    Err(failure) if failure.object_missing() => Ok(None),
                    Err(failure) => Err(failure),
                }
            }
        })
        .await
    }

    /// Keyset pages of 10,000 keys with their versions, on one session; an empty listing
    /// when the table does not exist. Comparing by content hash is not supported here.
    async fn list_keys(&self, request: &ListRequest) -> Result<Listing> {
        if let Compare::Hash(_) = request.compare {
            return Err(DriftError::Unsupported {
                side: "destination",
                what: "snowflake with a stream compared by content hash (CDC)".to_string(),
                stream: request.table.clone(),
            }
            .into());
        }
        let session = self
            .with_session(|session| async move { Ok(session) })
            .await?;
        let schema = self.schema.clone();
        let request = request.clone();
        Ok(
            futures::stream::try_unfold(Some(None::<Key>), move |after: Option<Option<Key>>| {
                let session = session.clone();
                let statement = after
                    .as_ref()
                    .map(|after| sql::list_keys(&schema, &request, after.as_ref(), LIST_PAGE));
                let int_key = request.int_key;
                async move {
                    let Some(statement) = statement else {
                        return Ok(None);
                    };
                    let rows = match run(&session, "list the table's keys", statement).await {
                        Ok(rows) => rows,
                        Err(failure) if failure.object_missing() => return Ok(None),
                        Err(failure) => return Err(failure.into_error()),
                    };
                    let mut listed = Vec::with_capacity(rows.len());
                    for row in &rows {
                        let key_text = text(row, "k")?;
                        let key = if int_key {
                            Key::Int(key_text.parse().map_err(|_| SnowflakeError::NoValue {
                                column: "k".to_owned(),
                            })?)
                        } else {
                            Key::Text(key_text)
                        };
                        let version = text(row, "v")?.parse().ok();
                        listed.push(Listed {
                            key,
                            version,
                            hash: None,
                        });
                    }
                    let next =
                        (rows.len() == LIST_PAGE).then(|| listed.last().map(|l| l.key.clone()));
                    Ok(Some((listed, next)))
                }
            })
            .boxed(),
        )
    }

    async fn drop_table(&self, table: &str) -> Result<()> {
        let statement = sql::drop_table(&self.schema, table);
        self.with_session(|session| {
            let statement = statement.clone();
            async move { run(&session, "drop the table", statement).await.map(|_| ()) }
        })
        .await
    }

    /// Snowflake's DDL commits on its own, so a drop and a rename cannot share a transaction
    /// (a reader between them would find no table), and the emulator the tests run against
    /// has no `ALTER TABLE ... SWAP WITH`. One `CREATE OR REPLACE TABLE target AS SELECT *
    /// FROM build` is atomic (Snowflake drops the old table and creates the new one in one
    /// transaction): a reader's query sees the old table or the new one. It copies the rows
    /// once more (a model table is a result, usually small); the build table is dropped
    /// after.
    async fn swap_table(&self, build: &str, target: &str) -> Result<()> {
        let replace = sql::replace_table(&self.schema, target, build);
        let drop = sql::drop_table(&self.schema, build);
        self.with_session(|session| {
            let (replace, drop) = (replace.clone(), drop.clone());
            async move {
                run(&session, "replace the model table", replace).await?;
                run(&session, "drop the build table", drop).await?;
                Ok(())
            }
        })
        .await
    }

    /// `Ok(None)` also when the ledger (or schema) does not exist yet.
    async fn last_load(&self, stream: &str) -> Result<Option<LedgerEntry>> {
        let statement = sql::ledger_last(&self.schema, stream);
        self.with_session(|session| {
            let statement = statement.clone();
            async move {
                let rows = match run(&session, "read the ledger", statement).await {
                    Ok(rows) => rows,
                    Err(failure) if failure.object_missing() => return Ok(None),
                    Err(failure) => return Err(failure),
                };
                let Some(row) = rows.first() else {
                    return Ok(None);
                };
                let checksum = text(row, "checksum")?;
                Ok(Some(LedgerEntry {
                    load_id: text(row, "load_id")?,
                    stream: text(row, "stream")?,
                    rows: count(row, "rows")?,
                    checksum: checksum
                        .parse()
                        .map_err(|_| SnowflakeError::BadLedgerChecksum(checksum.clone()))?,
                    committed_at: timestamp(row, "committed_at")?,
                }))
            }
        })
        .await
    }
}

/// Why a step failed: a Snowflake error (kept whole, so session expiry can be told apart) or
/// one of syncline's own.
enum Failure {
    Snowflake {
        step: &'static str,
        error: sf::Error,
    },
    Syncline(Error),
}

type Outcome<T> = std::result::Result<T, Failure>;

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Syncline(error)
    }
}

impl<E: Classified> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure::Syncline(error.into())
    }
}

impl Failure {
    fn session_expired(&self) -> bool {
        matches!(self, Failure::Snowflake { error, .. } if error.is_session_expired())
    }

    fn object_missing(&self) -> bool {
        matches!(self, Failure::Snowflake { error, .. } if error.snowflake_code() == Some(OBJECT_MISSING))
    }

    /// A missing ledger becomes an error that says what to run first.
    fn ledger_missing(self, schema: &str) -> Failure {
        if self.object_missing() {
            Failure::Syncline(
                SnowflakeError::NoLedger {
                    ledger: sql::qualified(schema, sql::LEDGER_TABLE),
                }
                .into(),
            )
        } else {
            self
        }
    }

    /// The failure with its causes, for a warning.
    fn describe(self) -> String {
        self.into_error().report()
    }

    fn into_error(self) -> Error {
        match self {
            Failure::Snowflake { step, error } => sf_error(step, error).into(),
            Failure::Syncline(error) => error,
        }
    }
}

/// Attempts of a set-up statement before its failure stands.
const SET_UP_ATTEMPTS: u32 = 3;

/// Runs a set-up statement (`CREATE ... IF NOT EXISTS`, shared by every stream of the
/// schema), again after a failure. Runs of different streams start together and set up the
/// same schema, ledger and tombstone table at the same moment; where the loser of that race
/// fails instead of finding the object made (the emulator reports a catalog write conflict),
/// the statement run again finds it and does nothing, so set-up is idempotent. Snowflake has
/// no advisory lock to take around it, as the PostgreSQL destination does. A failure that is
/// not a race (no privilege, say) fails every attempt and stands.
async fn set_up(session: &sf::Session, step: &'static str, statement: String) -> Outcome<()> {
    let mut attempt = 1;
    loop {
        match run(session, step, statement.clone()).await {
            Ok(_) => return Ok(()),
            Err(failure) if attempt < SET_UP_ATTEMPTS && !failure.session_expired() => {
                warn!(step, attempt, error = %failure.describe(), "set-up statement failed; running it again (another run may be setting up the same schema)");
                // The failed statement may have left a transaction open (AUTOCOMMIT is off).
                if let Err(failure) = run(session, "roll back", sql::templates::ROLLBACK).await {
                    debug!(error = %failure.describe(), "nothing to roll back");
                }
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(failure) => return Err(failure),
        }
    }
}

/// Runs one statement and collects its rows, naming `step` in any error.
async fn run(
    session: &sf::Session,
    step: &'static str,
    statement: impl Into<String>,
) -> Outcome<Vec<DynamicRow>> {
    let statement: String = statement.into();
    let failed = |error: sf::Error| Failure::Snowflake { step, error };
    let cursor = session.query(statement).await.map_err(failed)?;
    cursor.collect::<Vec<DynamicRow>>().await.map_err(failed)
}

/// A connector error, naming the step; [`SnowflakeError`] decides its kind (network faults,
/// timeouts and expired sessions are transient).
fn sf_error(step: &'static str, error: sf::Error) -> SnowflakeError {
    SnowflakeError::Statement {
        step,
        source: ConnectorError::new(error),
    }
}

fn first_row(rows: Vec<DynamicRow>, step: &'static str) -> Result<DynamicRow, SnowflakeError> {
    rows.into_iter()
        .next()
        .ok_or(SnowflakeError::NoResultRow { step })
}

fn cell<'a>(row: &'a DynamicRow, column: &str) -> Result<&'a CellValue, SnowflakeError> {
    row.value(column)
        .map_err(|source| SnowflakeError::MissingColumn {
            column: column.to_owned(),
            source,
        })
}

fn text(row: &DynamicRow, column: &str) -> Result<String, SnowflakeError> {
    match cell(row, column)? {
        CellValue::String(value) => Ok(value.clone()),
        other => Err(unexpected(column, "text", other)),
    }
}

/// A non-negative whole number, or `None` for NULL or a column the result lacks (MERGE reports
/// only the actions its clauses can take).
fn optional_count(row: &DynamicRow, column: &str) -> Result<Option<u64>, SnowflakeError> {
    let Ok(value) = row.value(column) else {
        return Ok(None);
    };
    let number = match value {
        CellValue::Null => return Ok(None),
        CellValue::Integer(n) => u64::try_from(*n).ok(),
        CellValue::String(text) => text.parse().ok(),
        CellValue::Decimal(decimal) => decimal.raw().parse().ok(),
        _ => None,
    };
    number
        .map(Some)
        .ok_or_else(|| unexpected(column, "a count", value))
}

fn count(row: &DynamicRow, column: &str) -> Result<u64, SnowflakeError> {
    optional_count(row, column)?.ok_or_else(|| SnowflakeError::NoValue {
        column: column.to_owned(),
    })
}

fn timestamp(
    row: &DynamicRow,
    column: &str,
) -> Result<chrono::DateTime<chrono::Utc>, SnowflakeError> {
    match cell(row, column)? {
        CellValue::TimestampTz(value) => Ok(value.with_timezone(&chrono::Utc)),
        CellValue::TimestampLtz(value) => Ok(*value),
        CellValue::TimestampNtz(value) => Ok(value.and_utc()),
        other => Err(unexpected(column, "a timestamp", other)),
    }
}

fn unexpected(column: &str, wanted: &'static str, got: &CellValue) -> SnowflakeError {
    let kind = match got {
        CellValue::Null => "NULL",
        CellValue::Boolean(_) => "a boolean",
        CellValue::Integer(_) | CellValue::Decimal(_) | CellValue::Float(_) => "a number",
        CellValue::String(_) => "text",
        _ => "another type",
    };
    SnowflakeError::UnexpectedValue {
        column: column.to_owned(),
        wanted,
        got: kind,
    }
}

/// Count and checksum from the fingerprint query's `row_count`, `sum_high` and `sum_low`: the
/// sums of the high and low 32 bits of every row hash. Adding the halves separately keeps every
/// SQL value an exact integer on any engine; the wrapping 64-bit sum is
/// `sum_high * 2^32 + sum_low (mod 2^64)`.
fn fingerprint_of(row: &DynamicRow) -> Result<Fingerprint, SnowflakeError> {
    let rows = count(row, "row_count")?;
    let sum = |column: &str| -> Result<u128, SnowflakeError> {
        let value = text(row, column)?;
        value.parse().map_err(|_| SnowflakeError::NotAWholeNumber {
            column: column.to_owned(),
            value,
        })
    };
    Ok(Fingerprint {
        rows,
        checksum: fingerprint_from_sums(sum("sum_high")?, sum("sum_low")?),
    })
}

pub(crate) fn fingerprint_from_sums(sum_high: u128, sum_low: u128) -> u64 {
    // Truncation to u64 is the modulo 2^64 of the wrapping sum.
    ((sum_high << 32).wrapping_add(sum_low)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::row_hash;

    #[test]
    fn sums_of_halves_give_the_wrapping_checksum() {
        let rows = [
            ("1", 10, false),
            ("2", 20, true),
            ("x", 1_700_000_000_000, false),
        ];
        let mut expected = Fingerprint::default();
        let (mut high, mut low) = (0u128, 0u128);
        for (key, version, deleted) in rows {
            expected.add(key, version, deleted);
            let hash = row_hash(key, version, deleted);
            high += u128::from(hash >> 32);
            low += u128::from(hash & 0xffff_ffff);
        }
        assert_eq!(fingerprint_from_sums(high, low), expected.checksum);
        assert_eq!(fingerprint_from_sums(0, 0), 0);
    }
}
