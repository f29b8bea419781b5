//! The shape every staged record has, whatever its source.
//!
//! A staged batch carries the stream's key column, its typed data columns, and two system
//! columns that drive the merge: the record's version (its modification time at the source)
//! and whether the record is a delete. Destinations add their own bookkeeping columns.

use arrow::array::{Array, Decimal128Array, StringArray};
use arrow::datatypes::{DataType, Field, TimeUnit};

/// The version of the record at the source: merges never replace a newer version with an older one.
pub const VERSION_COLUMN: &str = "_syncline_version";
/// True when the record is a delete (archived in HubSpot, `IsDeleted` in Salesforce, ...).
pub const DELETED_COLUMN: &str = "_syncline_deleted";
/// Destination column recording which load last wrote the row.
pub const LOAD_ID_COLUMN: &str = "_syncline_load_id";
/// Destination column holding the delete time when a stream uses soft deletes.
pub const DELETED_AT_COLUMN: &str = "_syncline_deleted_at";

/// The most digits a staged decimal holds: Arrow's `Decimal128`, Snowflake's `NUMBER` and
/// Delta's `decimal` all stop at 38 (PostgreSQL's `numeric` holds more).
pub const MAX_DECIMAL_PRECISION: u8 = 38;

/// Each decimal of `array` as its canonical text: every digit of its scale, a `0` before the
/// point, `-` for a negative value (`12.50`, `0.00`, `-0.01`); NULL stays NULL. It is what
/// PostgreSQL's `numeric(p,s)::text`, Snowflake's `TO_VARCHAR` of a `NUMBER(p,s)` and Arrow's
/// cast to text all print, so a decimal compares equal to the text a destination already holds
/// for it, and a decimal key fingerprints the same on both sides of a load.
pub fn decimal_strings(array: &Decimal128Array) -> StringArray {
    (0..array.len())
        .map(|row| array.is_valid(row).then(|| array.value_as_string(row)))
        .collect()
}

/// The timestamp type used for versions and datetime values: milliseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

pub fn version_field() -> Field {
    Field::new(VERSION_COLUMN, timestamp_type(), false)
}

pub fn deleted_field() -> Field {
    Field::new(DELETED_COLUMN, DataType::Boolean, false)
}

/// True for names syncline reserves; sources must not emit data columns with these names.
pub fn is_system_column(name: &str) -> bool {
    name.starts_with("_syncline_")
}
