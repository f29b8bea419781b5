//! Destinations: where staged loads are merged, exactly once per load id.
//!
//! Contract every destination keeps (the pipeline relies on it for exactly-once):
//! - `merge` applies one staged load and records its load id in the destination's ledger
//!   in the same transaction. If the load id is already in the ledger, nothing is applied and
//!   the outcome says `skipped`.
//! - A merge never replaces a row with an older version of it (`_syncline_version`), and a row
//!   that did not change is not rewritten (so a re-read overlap merges nothing).
//! - Incoming rows may repeat a key; the newest version wins (a delete wins a tie).
//! - A delete is remembered where no row is left to carry it (hard deletes: a tombstone in a
//!   side table; soft deletes: a row marked deleted, also for a key the table never held), so
//!   an older version arriving in a later load never brings the key back (see `plan`).
//! - A complete full load ([`MergeRequest::complete`]) leaves the table equal to the source:
//!   in the same transaction, every live row whose key the load lacks is deleted (hard: with
//!   a tombstone at the row's version; soft: marked deleted), unless a load that started after
//!   this one wrote it (see `plan::Orphans`).
//! - State (cursors) may advance only after `merge` returned Ok.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::Result;
use crate::config::{Config, DestinationConfig};
use crate::error::{Classified, ErrorKind};
use crate::load::{DeleteMode, SchemaChange};
use crate::reconcile::Fingerprint;
use crate::reconcile::drift::{DriftError, ListRequest, Listing};

pub mod lake;
mod layout;
pub mod mirror;
mod plan;
pub mod postgres;
pub mod snowflake;
mod staged;

pub use layout::{ColumnDrift, LayoutError};

/// Connects to the destination the config names.
pub async fn build(config: &Config) -> Result<Arc<dyn Destination>> {
    Ok(match &config.destination {
        DestinationConfig::Postgres(p) => {
            Arc::new(postgres::PostgresDestination::connect(p.url.expose(), &p.schema).await?)
        }
        DestinationConfig::Lake(l) => Arc::new(lake::LakeDestination::from_config(config, l)?),
        DestinationConfig::Snowflake(s) => Arc::new(snowflake::SnowflakeDestination::new(
            s,
            &config.staging.url,
        )?),
    })
}

/// A breach of the merge contract that every destination detects the same way.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// What the destination received differs from the load's manifest: nothing of the load
    /// was applied.
    #[error(
        "load {load_id}: {destination} received {} rows with checksum {}, the staged load has {} rows \
         with checksum {}; nothing of it was applied",
        received.rows,
        received.checksum,
        staged.rows,
        staged.checksum
    )]
    ReceivedDiffers {
        destination: &'static str,
        load_id: String,
        received: Fingerprint,
        staged: Fingerprint,
    },
    /// Another run committed the load while this one was merging it; this merge was rolled
    /// back (or not applied), so the load counts once.
    #[error(
        "load {load_id} was committed by another run while this one was merging it; this merge \
         was not applied"
    )]
    CommittedMeanwhile { load_id: String },
    /// A models feature this destination does not have yet.
    #[error("{what} are not supported by this destination yet")]
    Unsupported { what: &'static str },
}

impl Classified for ContractError {
    fn kind(&self) -> ErrorKind {
        match self {
            ContractError::ReceivedDiffers { .. } => ErrorKind::Reconciliation,
            ContractError::CommittedMeanwhile { .. } => ErrorKind::Destination,
            ContractError::Unsupported { .. } => ErrorKind::Config,
        }
    }
}

/// What to merge and how.
#[derive(Debug, Clone)]
pub struct MergeRequest {
    pub load_id: String,
    pub stream: String,
    /// Destination table name (unquoted; destinations quote it).
    pub table: String,
    /// The key column (unquoted).
    pub key: String,
    pub deletes: DeleteMode,
    /// Schema of the staged batches: key, data columns, `_syncline_version`, `_syncline_deleted`.
    pub schema: SchemaRef,
    /// Count and checksum written in the load's manifest.
    pub staged: Fingerprint,
    /// Object store paths of the load's staged Parquet files, as the manifest lists them.
    /// Destinations that read the stage themselves (Snowflake's `COPY INTO`) load exactly these;
    /// the others take the rows from the batches passed to `merge`.
    pub files: Vec<String>,
    /// `Some(when)` for a complete full load: it holds every record the source had when its
    /// extraction started at `when` (no early stop, no dead letter), so the table's rows it
    /// lacks are gone from the source and the merge deletes them (module contract). `None`
    /// for every other load, which never deletes a row it does not carry.
    pub complete: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeOutcome {
    /// The load id was already in the ledger: nothing was applied.
    pub skipped: bool,
    pub inserted: u64,
    pub updated: u64,
    /// Deletes applied, a complete full load's orphans included.
    pub deleted: u64,
    /// Count and checksum of the rows the destination received, computed by the destination.
    pub received: Fingerprint,
    /// Where the merge's time went (zero where a destination does not tell the phases apart).
    #[serde(default)]
    pub timings: MergeTimings,
}

/// Milliseconds a merge spent per phase (see `reconcile::report::PhaseTimings`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeTimings {
    /// Sending the staged rows, reading them from the stage included.
    pub load_ms: u64,
    /// The merge statements, the check of what was received included.
    pub merge_ms: u64,
    /// The commit.
    pub commit_ms: u64,
    /// The rows were copied straight into an empty table: no staging table, no merge
    /// statements (PostgreSQL; see its `DirectSql`).
    #[serde(default)]
    pub direct_copy: bool,
    /// The rows were copied while the load was being staged
    /// ([`Destination::copy_while_staging`]): `load_ms` overlaps the extraction.
    #[serde(default)]
    pub copied_while_staging: bool,
}

/// The last load of a stream recorded in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub load_id: String,
    pub stream: String,
    pub rows: u64,
    pub checksum: u64,
    pub committed_at: chrono::DateTime<chrono::Utc>,
}

/// Reads a staged load's rows from the start; see [`Destination::merge_staged`].
pub type OpenBatches<'a> = dyn Fn() -> BoxStream<'static, Result<RecordBatch>> + Send + Sync + 'a;

#[async_trait]
pub trait Destination: Send + Sync {
    /// Connects and verifies the destination is usable (permissions, schema).
    async fn check(&self) -> Result<()>;

    /// Creates the table from the staged schema, or adds columns the table lacks.
    /// An incompatible type change is schema drift (`ErrorKind::SchemaDrift`).
    async fn ensure_table(&self, request: &MergeRequest) -> Result<SchemaChange>;

    /// Applies one staged load (see the module contract).
    async fn merge(
        &self,
        request: &MergeRequest,
        batches: BoxStream<'static, Result<RecordBatch>>,
    ) -> Result<MergeOutcome>;

    /// Applies one staged load whose rows `open` reads from the start each time it is called
    /// (the pipeline's path: the rows are the staged files). A destination with a faster path
    /// that may have to give up and read the rows again (PostgreSQL's copy into an empty table)
    /// overrides this; the contract is `merge`'s.
    async fn merge_staged(
        &self,
        request: &MergeRequest,
        open: &OpenBatches<'_>,
    ) -> Result<MergeOutcome> {
        self.merge(request, open()).await
    }

    /// Whether [`copy_while_staging`](Self::copy_while_staging) may take a full load.
    fn copies_while_staging(&self) -> bool {
        false
    }

    /// A full load's rows as the pipeline stages them, for a destination that can copy them
    /// straight into an empty table while they are being written to the stage (PostgreSQL).
    /// `request` is the load's before it is staged (no files, no staged fingerprint). The
    /// copy runs inside a transaction that commits only after `staged` yields the complete
    /// request: the load is then durable in the stage, its manifest written and the stream's
    /// state says it is pending, so the destination never holds a load the stage lacks. The
    /// check of what was received against `staged` and the ledger row are `merge`'s.
    ///
    /// `Ok(None)`: nothing applied (the table is not empty, the load carries a delete or
    /// repeats a key, or `staged` was dropped because staging failed or staged nothing); the
    /// pipeline merges the staged load the usual way. Dropping `batches` early is allowed.
    ///
    /// The open transaction holds the rows it copied, which another run taking the stream
    /// over would wait for: while this process waits for `staged` it keeps the transaction
    /// alive, and a transaction left idle longer than `idle_limit` (the stream's lease TTL: a
    /// process stalled that long has lost its lease) is ended by the destination.
    async fn copy_while_staging(
        &self,
        request: &MergeRequest,
        batches: BoxStream<'static, Result<RecordBatch>>,
        staged: tokio::sync::oneshot::Receiver<MergeRequest>,
        idle_limit: std::time::Duration,
    ) -> Result<Option<MergeOutcome>> {
        let _ = (request, batches, staged, idle_limit);
        Ok(None)
    }

    /// Whether the load id of `stream` is in the ledger (committed).
    async fn is_committed(&self, stream: &str, load_id: &str) -> Result<bool>;

    /// Count and checksum of the table's live rows, each as `(key, version, not deleted)`:
    /// compared with the source's current state, it proves the destination converged.
    /// `None` when the table does not exist.
    async fn table_fingerprint(
        &self,
        table: &str,
        key: &str,
        deletes: DeleteMode,
    ) -> Result<Option<Fingerprint>>;

    /// The newest ledger entry of a stream, if any.
    async fn last_load(&self, stream: &str) -> Result<Option<LedgerEntry>>;

    /// `syncline reconcile`: the live rows of a table as (key, version, and the content hash
    /// when `request.compare` asks for one), sorted by key as `reconcile::drift` says, in
    /// bounded chunks. An empty listing when the table does not exist. Destinations that
    /// cannot list say so (a configuration error).
    /// Whether this destination computes content hashes from Arrow rows
    /// (`drift::arrow_row_hashes`) rather than in SQL (`reconcile::listing`); the source
    /// computes them the same way.
    fn hashes_rows_as_arrow(&self) -> bool {
        false
    }

    /// Models: drops `table` when it exists (a model's build table left by an earlier run).
    async fn drop_table(&self, table: &str) -> Result<()> {
        let _ = table;
        Err(ContractError::Unsupported {
            what: "model tables",
        }
        .into())
    }

    /// Models: replaces `target` with the table `build` (created and loaded by `ensure_table`
    /// and `merge`) in one transaction, so a reader sees the old table or the new one, never
    /// a half; `build` is gone afterwards.
    async fn swap_table(&self, build: &str, target: &str) -> Result<()> {
        let _ = (build, target);
        Err(ContractError::Unsupported {
            what: "model tables",
        }
        .into())
    }

    async fn list_keys(&self, request: &ListRequest) -> Result<Listing> {
        Err(DriftError::Unsupported {
            side: "destination",
            what: "type (postgres, lake and snowflake list keys)".to_string(),
            stream: request.table.clone(),
        }
        .into())
    }
}
